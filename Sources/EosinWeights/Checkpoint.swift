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

/// Strict name-table checking: every expected tensor present with its shape, and no tensor left
/// over except names the model declares it ignores.
public struct TensorTable {
  public let file: SafeTensorsFile
  private(set) var used: Set<String> = []

  public init(_ file: SafeTensorsFile) { self.file = file }

  /// Takes a tensor, checking its shape.
  public mutating func take(_ name: String, _ shape: [Int]) throws -> Tensor {
    used.insert(name)
    return try file.tensor(name, shape: shape)
  }

  /// Throws on any tensor in the file that was not taken and is not in `ignoring`.
  public func finish(ignoring: Set<String> = []) throws {
    let extra = Set(file.tensors.keys).subtracting(used).subtracting(ignoring)
    if let e = extra.sorted().first {
      throw WeightsError.tensor(
        file: file.path, tensor: e, message: "unexpected tensor (\(extra.count) unknown in all); is this the right architecture?")
    }
  }
}
