import EosinTensor
import Foundation

/// A checkpoint directory: `model.safetensors` + `config.json` + optional `manifest.json`.
public final class Checkpoint: @unchecked Sendable {
  public let directory: String
  public let weights: SafeTensorsFile
  /// The raw bytes of `config.json`, for a model's Codable config.
  public let configData: Data
  /// The parsed `manifest.json`, when present.
  public let manifest: [String: Any]?

  /// Opens a checkpoint directory, or a `.safetensors` file with `config.json` beside it.
  /// - Throws: ``WeightsError`` naming the missing or bad file.
  public init(path: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
      throw WeightsError.io(file: path, message: "no such checkpoint")
    }
    let dir = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
    directory = dir
    let st = isDir.boolValue ? (dir as NSString).appendingPathComponent("model.safetensors") : path
    weights = try SafeTensorsFile(path: st)
    let cfg = (dir as NSString).appendingPathComponent("config.json")
    guard let d = FileManager.default.contents(atPath: cfg) else {
      throw WeightsError.io(file: cfg, message: "missing config.json beside the weights")
    }
    configData = d
    let man = (dir as NSString).appendingPathComponent("manifest.json")
    if let m = FileManager.default.contents(atPath: man) {
      guard let o = try? JSONSerialization.jsonObject(with: m) as? [String: Any] else {
        throw WeightsError.format(file: man, message: "manifest.json is not a JSON object")
      }
      manifest = o
    } else {
      manifest = nil
    }
  }

  /// Decodes `config.json` into a model config type.
  public func config<T: Decodable>(_ type: T.Type) throws -> T {
    do { return try JSONDecoder().decode(T.self, from: configData) } catch {
      throw WeightsError.format(
        file: (directory as NSString).appendingPathComponent("config.json"), message: "config does not match \(T.self): \(error)")
    }
  }

  /// The sha256 of the weights file (streamed; O(file size)).
  public func weightsSHA256() throws -> String { try SHA256.hex(fileAt: weights.path) }
}

/// Where a model's tensors come from while it is built: a checkpoint (``TensorTable``) or fresh
/// initialisation (``RandomTensors``). Models call `take` once per name in their table.
public protocol TensorSource {
  /// The tensor called `name`, which must have exactly `shape`.
  mutating func take(_ name: String, _ shape: [Int]) throws -> Tensor
}

/// Fresh weights for training or benchmarks, deterministic for a seed: normal(0, `std`) for
/// weights, zeros for biases, ones for LayerNorm weights, log(1/0.07) for `logit_scale`.
/// Records every name and shape it hands out, so the same table can be written as a checkpoint.
public struct RandomTensors: TensorSource {
  var state: UInt64
  public var std: Float
  public private(set) var taken: [String: Tensor] = [:]

  public init(seed: UInt64, std: Float = 0.02) {
    state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
    self.std = std
  }

  mutating func uniform() -> Double {
    state ^= state << 13
    state ^= state >> 7
    state ^= state << 17
    return (Double(state >> 11) + 0.5) / Double(1 << 53)
  }

  /// Box-Muller normal sample.
  mutating func normal() -> Float {
    Float((-2 * log(uniform())).squareRoot() * cos(2 * Double.pi * uniform()))
  }

  public mutating func take(_ name: String, _ shape: [Int]) throws -> Tensor {
    let n = shape.reduce(1, *)
    let leaf = name.split(separator: ".").suffix(2).joined(separator: ".")
    let isNorm = leaf.contains("norm") || leaf.contains("ln_") || leaf.hasPrefix("ln")
    var t: Tensor
    if name == "logit_scale" {
      t = Tensor(shape: shape, data: [Float](repeating: Float(log(1 / 0.07)), count: n))
    } else if name.hasSuffix(".bias") {
      t = Tensor(zeros: shape)
    } else if isNorm && name.hasSuffix(".weight") {
      t = Tensor(shape: shape, data: [Float](repeating: 1, count: n))
    } else {
      var d = [Float](repeating: 0, count: n)
      for i in 0..<n { d[i] = normal() * std }
      t = Tensor(shape: shape, data: d)
    }
    taken[name] = t
    return t
  }
}

/// Strict name-table checking: every expected tensor present with its shape, and no tensor left
/// over except names the model declares it ignores.
public struct TensorTable: TensorSource {
  /// Where the tensors come from: a safetensors file, shards, or a PyTorch archive.
  public let store: any TensorStore
  /// The store's names and shapes, read once (a safetensors file builds them on each access).
  let shapes: [String: [Int]]
  private(set) var used: Set<String> = []

  public init(_ store: any TensorStore) {
    self.store = store
    shapes = store.shapes
  }

  /// Takes a tensor, checking its shape.
  public mutating func take(_ name: String, _ shape: [Int]) throws -> Tensor {
    used.insert(name)
    return try store.tensor(name, shape: shape)
  }

  /// Whether the store holds `name` (for optional tensors such as biases and LayerScale).
  public func has(_ name: String) -> Bool { shapes[name] != nil }

  /// The shape of `name`, when the store holds it.
  public func shape(_ name: String) -> [Int]? { shapes[name] }

  /// Throws on any tensor in the file that was not taken and is not in `ignoring`.
  public func finish(ignoring: Set<String> = []) throws {
    let extra = Set(shapes.keys).subtracting(used).subtracting(ignoring)
    if let e = extra.sorted().first {
      throw WeightsError.tensor(
        file: store.path, tensor: e, message: "unexpected tensor (\(extra.count) unknown in all); is this the right architecture?"
      )
    }
  }
}
