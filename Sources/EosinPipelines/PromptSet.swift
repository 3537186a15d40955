import EosinTokenizer
import EosinWeights
import Foundation

/// Errors from pipelines: prompt sets, inputs, calibration and reports. Each names the file and
/// the problem.
public enum PipelineError: LocalizedError, Equatable {
  case file(path: String, message: String)
  case input(String)

  public var errorDescription: String? {
    switch self {
    case .file(let p, let m): return "\(p): \(m)"
    case .input(let m): return m
    }
  }
}

/// One class of a prompt set: its name and synonyms.
public struct PromptClass: Codable, Equatable, Sendable {
  public var name: String
  public var synonyms: [String]

  public init(name: String, synonyms: [String] = []) {
    self.name = name
    self.synonyms = synonyms
  }

  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    name = try c.decode(String.self, forKey: .name)
    synonyms = try c.decodeIfPresent([String].self, forKey: .synonyms) ?? []
  }

  /// Name first, then synonyms.
  public var phrases: [String] { [name] + synonyms }
}

/// A zero-shot prompt set (`Prompts/zero-shot/*.json`): classes with synonyms, templates with a
/// `{}` placeholder, and an optional background (non-tissue) class.
public struct PromptSet: Codable, Equatable, Sendable {
  public var name: String
  public var version: Int
  public var description: String
  public var classes: [PromptClass]
  public var templates: [String]
  public var background: PromptClass?
  /// For an organ's diagnostic set: words naming the organ ("lung", "pulmonary"). A question
  /// using one is judged against this set; organ sets also compete to judge a slide by which
  /// set's classes match it best. nil for sets that are not about one organ.
  public var organWords: [String]?
  /// The organ the set's classes belong to, for a set that does not compete in the organ
  /// choice (`colorectal-coarse` is about the colorectum too). Sets with ``organWords`` are
  /// about the organ of their own name.
  public var organ: String?
  /// The organ this set's classes are about, if any.
  public var organName: String? { organ ?? ((organWords ?? []).isEmpty ? nil : name) }
  /// sha256 of the file's bytes (or of the inline definition), for cache keys.
  public var sha256: String = ""

  enum CodingKeys: String, CodingKey {
    case name, version, description, classes, templates, background
    case organWords = "organ_words", organ
  }

  /// Default templates for inline class lists.
  public static let defaultTemplates = ["an H&E image of {}.", "a histopathology image showing {}.", "{}."]

  public init(
    name: String, version: Int = 1, description: String = "", classes: [PromptClass], templates: [String],
    background: PromptClass? = nil
  ) throws {
    self.name = name
    self.version = version
    self.description = description
    self.classes = classes
    self.templates = templates
    self.background = background
    try validate(source: name)
    // Sorted keys: on Linux a keyed container's order changes from one process to the next, and
    // the hash keys the text-embedding cache and calibrations across runs.
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    sha256 = SHA256.hex(Array((try? encoder.encode(self)) ?? Data()))
  }

  public init(from d: Decoder) throws {
    let c = try d.container(keyedBy: CodingKeys.self)
    name = try c.decode(String.self, forKey: .name)
    version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 1
    description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
    classes = try c.decode([PromptClass].self, forKey: .classes)
    templates = try c.decodeIfPresent([String].self, forKey: .templates) ?? PromptSet.defaultTemplates
    background = try c.decodeIfPresent(PromptClass.self, forKey: .background)
    organWords = try c.decodeIfPresent([String].self, forKey: .organWords)
    organ = try c.decodeIfPresent(String.self, forKey: .organ)
  }

  /// Every prompt set in the first of `searchDirs` that exists, by name. A file that fails to
  /// load is an error naming it.
  public static func loadAll(searchDirs: [String]) throws -> [PromptSet] {
    guard let dir = searchDirs.first(where: { FileManager.default.fileExists(atPath: $0) }) else { return [] }
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
    return try files.map { try load((dir as NSString).appendingPathComponent($0)) }
  }

  /// A quick inline set from `--classes "a,b,c"` with the default templates.
  public static func inline(_ list: String) throws -> PromptSet {
    let names = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    return try PromptSet(name: "inline", classes: names.map { PromptClass(name: $0) }, templates: defaultTemplates)
  }

  /// Loads and validates a prompt set. A bare name (`lung`) is looked up in `searchDirs`.
  /// - Throws: ``PipelineError/file`` for a missing file, malformed JSON (with line and column),
  ///   an empty class list, duplicate class names, or a template without `{}`.
  public static func load(_ path: String, searchDirs: [String] = []) throws -> PromptSet {
    var p = path
    if !FileManager.default.fileExists(atPath: p) {
      for d in searchDirs {
        let c = (d as NSString).appendingPathComponent(path.hasSuffix(".json") ? path : path + ".json")
        if FileManager.default.fileExists(atPath: c) {
          p = c
          break
        }
      }
    }
    guard FileManager.default.fileExists(atPath: p) else {
      throw PipelineError.file(path: path, message: "prompt set not found; pass a JSON file or a name from Prompts/zero-shot")
    }
    guard let data = FileManager.default.contents(atPath: p) else { throw PipelineError.file(path: p, message: "cannot read") }
    let text = String(decoding: data, as: UTF8.self)
    do { _ = try JSONSerialization.jsonObject(with: data) } catch {
      let (l, c) = jsonErrorLocation(error, in: text)
      throw PipelineError.file(path: p, message: "malformed JSON at line \(l), column \(c)")
    }
    var set: PromptSet
    do { set = try JSONDecoder().decode(PromptSet.self, from: data) } catch let DecodingError.keyNotFound(k, ctx) {
      throw PipelineError.file(
        path: p, message: "missing field '\((ctx.codingPath + [k]).map { $0.stringValue }.joined(separator: "."))'")
    } catch {
      throw PipelineError.file(path: p, message: "not a prompt set: \(error)")
    }
    try set.validate(source: p)
    set.sha256 = SHA256.hex([UInt8](data))
    return set
  }

  func validate(source: String) throws {
    guard !classes.isEmpty else { throw PipelineError.file(path: source, message: "the class list is empty") }
    var seen: Set<String> = []
    for c in classes + (background.map { [$0] } ?? []) {
      let k = c.name.lowercased().trimmingCharacters(in: .whitespaces)
      guard !k.isEmpty else { throw PipelineError.file(path: source, message: "a class has an empty name") }
      guard seen.insert(k).inserted else { throw PipelineError.file(path: source, message: "duplicate class name '\(c.name)'") }
    }
    guard !templates.isEmpty else { throw PipelineError.file(path: source, message: "no templates") }
    for t in templates where !t.contains("{}") {
      throw PipelineError.file(path: source, message: "template '\(t)' has no {} placeholder")
    }
  }

  /// Class names in output order: the classes, then the background class when there is one.
  public var allClasses: [PromptClass] { classes + (background.map { [$0] } ?? []) }
}
