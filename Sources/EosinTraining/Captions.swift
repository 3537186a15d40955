import Foundation

/// A class from `Prompts/knowledge/*.json`.
public struct KnowledgeClass: Codable, Sendable {
  public var id: String
  public var datasetLabel: String
  public var name: String
  public var synonyms: [String]
  public var organ: String
  public var behaviour: String
  public var features: [String]
  public var nextSteps: String?
  public var coarse: String?
  public var grade: String?

  enum CodingKeys: String, CodingKey {
    case id, name, synonyms, organ, behaviour, features, coarse, grade
    case datasetLabel = "dataset_label", nextSteps = "next_steps"
  }
}

/// Loads every knowledge file in a folder.
public enum Knowledge {
  public static func load(_ dir: String) throws -> [KnowledgeClass] {
    struct File: Codable { var classes: [KnowledgeClass] }
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
    guard !files.isEmpty else { throw TrainingError.data("\(dir): no knowledge files (*.json)") }
    var out: [KnowledgeClass] = []
    for f in files {
      let p = (dir as NSString).appendingPathComponent(f)
      do {
        out += try JSONDecoder().decode(File.self, from: FileManager.default.contents(atPath: p) ?? Data()).classes
      } catch {
        throw TrainingError.data("\(p): not a knowledge file: \(error)")
      }
    }
    return out
  }
}

/// Builds contrastive-training captions from knowledge notes.
///
/// Generalisation to new wording is measured by holding wording out: training templates are
/// disjoint from the zero-shot prompt sets' templates, and any synonym that a prompt set uses is
/// never used in training captions (only the class's main name is shared).
public struct CaptionBuilder: Sendable {
  public static let trainingTemplates = [
    "{}", "a tile of {}", "histology of {}", "this tissue shows {}", "{} under the microscope", "pathology image: {}",
    "a photomicrograph of {}", "tissue section with {}", "{} at high power",
  ]
  public let classes: [KnowledgeClass]
  public let heldOutSynonyms: Set<String>

  public init(classes: [KnowledgeClass], heldOutSynonyms: Set<String>) {
    self.classes = classes
    self.heldOutSynonyms = heldOutSynonyms
  }

  /// The names captions of class `c` use: its name and the synonyms no prompt set holds out.
  public func names(_ c: Int) -> [String] {
    [classes[c].name] + classes[c].synonyms.filter { !heldOutSynonyms.contains($0.lowercased()) }
  }

  /// A random caption for class `c`: a template filled with the name or a training synonym,
  /// often followed by one to two of its morphological features.
  public func caption(_ c: Int, rng: inout SeededRNG) -> String {
    let k = classes[c]
    let names = names(c)
    let name = names[Int(rng.next() % UInt64(names.count))]
    let t = Self.trainingTemplates[Int(rng.next() % UInt64(Self.trainingTemplates.count))]
    var s = t.replacingOccurrences(of: "{}", with: name)
    let nf = Int(rng.next() % 3)
    if nf > 0 && !k.features.isEmpty {
      var fs: [String] = []
      for _ in 0..<nf { fs.append(k.features[Int(rng.next() % UInt64(k.features.count))]) }
      s += ", with " + fs.joined(separator: " and ")
    }
    // Now and then the organ, so organ words meet every organ's images (organ recognition).
    if !["none", "several", ""].contains(k.organ) && rng.uniform() < 0.25 { s += ", from the " + k.organ }
    return s
  }
}
