import EosinTensor
import Foundation

/// A read-only set of named tensors: one safetensors file, a sharded safetensors checkpoint, or a
/// PyTorch `.bin` archive. Models take tensors from it through ``TensorTable``.
public protocol TensorStore: AnyObject, Sendable {
  /// The file (or index file) the tensors come from, for error messages.
  var path: String { get }
  /// Every tensor name, with its shape.
  var shapes: [String: [Int]] { get }
  /// A tensor converted to Float32; when `shape` is given the tensor must have exactly it.
  func tensor(_ name: String, shape: [Int]?) throws -> Tensor
}

extension SafeTensorsFile: TensorStore {
  public var shapes: [String: [Int]] { tensors.mapValues(\.shape) }
}

/// A checkpoint split over several safetensors files, named by `model.safetensors.index.json`
/// (`{"weight_map": {"tensor": "model-00001-of-00002.safetensors", ...}}`), as transformers and
/// timm write large models. Each shard is opened (and validated) once.
public final class ShardedSafeTensors: TensorStore, @unchecked Sendable {
  public let path: String
  public let shapes: [String: [Int]]
  let shardOf: [String: SafeTensorsFile]
  /// The shard files, in name order.
  public var shardPaths: [String] { Set(shardOf.values.map(\.path)).sorted() }

  /// - Throws: ``WeightsError`` naming the index or the missing or bad shard.
  public init(index: String) throws {
    path = index
    guard let d = FileManager.default.contents(atPath: index) else {
      throw WeightsError.io(file: index, message: "no such file")
    }
    guard let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
      let map = o["weight_map"] as? [String: String]
    else {
      throw WeightsError.io(
        file: index, message: "not a shard index: expected a JSON object with a \"weight_map\" of names to files")
    }
    let dir = (index as NSString).deletingLastPathComponent
    var files: [String: SafeTensorsFile] = [:]
    var owner: [String: SafeTensorsFile] = [:]
    var shp: [String: [Int]] = [:]
    for (name, file) in map.sorted(by: { $0.key < $1.key }) {
      guard !file.contains("/"), !file.hasPrefix(".") else {
        throw WeightsError.io(file: index, message: "shard '\(file)' for '\(name)' is not a file beside the index")
      }
      let f: SafeTensorsFile
      if let o = files[file] {
        f = o
      } else {
        let p = (dir as NSString).appendingPathComponent(file)
        guard FileManager.default.fileExists(atPath: p) else {
          throw WeightsError.io(file: index, message: "names shard '\(file)' (for '\(name)'), which is missing")
        }
        f = try SafeTensorsFile(path: p)
        files[file] = f
      }
      guard let s = f.tensors[name]?.shape else {
        throw WeightsError.tensor(file: f.path, tensor: name, message: "missing, though the index places it in this shard")
      }
      owner[name] = f
      shp[name] = s
    }
    shardOf = owner
    shapes = shp
  }

  public func tensor(_ name: String, shape: [Int]?) throws -> Tensor {
    guard let f = shardOf[name] else { throw WeightsError.tensor(file: path, tensor: name, message: "missing") }
    return try f.tensor(name, shape: shape)
  }
}

/// Finds and opens the weights of a checkpoint folder in the formats models are published in:
/// `model.safetensors`, a sharded `model.safetensors.index.json`, open_clip's
/// `open_clip_model.safetensors`, or a PyTorch archive (`pytorch_model.bin`,
/// `open_clip_pytorch_model.bin`). Safetensors is preferred when a folder has both.
public enum WeightsLocator {
  /// The file names tried, in order.
  public static let candidates = [
    "model.safetensors", "model.safetensors.index.json", "open_clip_model.safetensors", "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
  ]

  /// Opens the first candidate present in `dir`.
  /// - Throws: ``WeightsError/io`` naming the folder and the names looked for when none is there.
  public static func open(_ dir: String) throws -> any TensorStore {
    for c in candidates {
      let p = (dir as NSString).appendingPathComponent(c)
      guard FileManager.default.fileExists(atPath: p) else { continue }
      if c.hasSuffix(".index.json") { return try ShardedSafeTensors(index: p) }
      if c.hasSuffix(".bin") { return try TorchArchive(path: p) }
      return try SafeTensorsFile(path: p)
    }
    throw WeightsError.io(file: dir, message: "no weights found (looked for \(candidates.joined(separator: ", ")))")
  }
}
