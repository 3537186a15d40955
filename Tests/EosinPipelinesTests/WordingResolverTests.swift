import EosinPipelines
import Foundation
import TestSupport
import XCTest

/// Prompt wording read through a language model (``WordingResolver``), on the tiny random LLaMA
/// fixture and the tiny random bundle.
final class WordingResolverTests: XCTestCase {
  static let gguf = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-llama-F32.gguf"
  static let bundleDir: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-wording-bundle")) }()

  /// Guards the resolver's contract: a trained name (case aside) is kept as written; any other
  /// phrase gets at most three trained names with weights that sum to one, nearest first, and a
  /// share in [0, 1] that is zero exactly when no name is borrowed; the names' hidden states
  /// are computed only when a phrase needs them, cached and read back to the same answers; an
  /// empty vocabulary and a missing language model are refused.
  func testResolverContract() throws {
    let cache = TestSupport.tempDir("eosin-wording-cache")
    func cached() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: cache))?.count ?? 0 }
    let vocab = ["lung adenocarcinoma", "benign lung tissue", "colon adenocarcinoma", "stroma", "lung adenocarcinoma "]
    let r = try WordingResolver(languageModel: Self.gguf, vocabulary: vocab, cacheDirectory: cache)
    XCTAssertEqual(r.vocabulary, ["benign lung tissue", "colon adenocarcinoma", "lung adenocarcinoma", "stroma"])
    XCTAssertEqual(try r.resolve("LUNG ADENOCARCINOMA"), .init(names: [], weights: [], share: 0, cosine: 1))
    XCTAssertEqual(cached(), 0, "the names are embedded only when a phrase needs them")
    for phrase in ["pulmonary adenocarcinoma", "fibrous stroma", "a completely different thing"] {
      let x = try r.resolve(phrase)
      XCTAssertGreaterThanOrEqual(x.share, 0)
      XCTAssertLessThanOrEqual(x.share, 1)
      XCTAssertEqual(x.share == 0, x.names.isEmpty, phrase)
      if x.share > 0 {
        XCTAssertLessThanOrEqual(x.names.count, 3)
        XCTAssertEqual(x.weights.reduce(0, +), 1, accuracy: 1e-5)
        XCTAssertEqual(x.weights, x.weights.sorted(by: >))
        XCTAssertTrue(Set(x.names).isSubset(of: r.vocabulary))
      }
    }
    XCTAssertEqual(cached(), 1)
    let again = try WordingResolver(languageModel: Self.gguf, vocabulary: vocab, cacheDirectory: cache)
    XCTAssertEqual(again.identity, r.identity)
    XCTAssertEqual(try again.resolve("pulmonary adenocarcinoma"), try r.resolve("pulmonary adenocarcinoma"))
    XCTAssertNotEqual(
      try WordingResolver(languageModel: Self.gguf, vocabulary: ["stroma"], cacheDirectory: nil).identity, r.identity)
    XCTAssertThrowsError(try WordingResolver(languageModel: Self.gguf, vocabulary: [" "], cacheDirectory: nil))
    XCTAssertThrowsError(try WordingResolver(languageModel: cache + "/none.gguf", vocabulary: ["stroma"], cacheDirectory: nil)) {
      XCTAssertTrue($0.localizedDescription.contains("none.gguf"), $0.localizedDescription)
    }
  }

  /// Guards stored readings: a resolver with its language model remembers each reading and uses
  /// a stored one as it is; a resolver without one reads trained names and stored phrases, keeps
  /// any other phrase as written (``WordingResolver/canRead(_:)`` false), never loads a model,
  /// and has its own identity, so its cache entries never stand in for the full resolver's.
  func testStoredReadings() throws {
    let vocab = ["lung adenocarcinoma", "benign lung tissue", "stroma"]
    let r = try WordingResolver(languageModel: Self.gguf, vocabulary: vocab, cacheDirectory: nil)
    let read = try r.resolve("pulmonary adenocarcinoma")
    XCTAssertEqual(r.readings["pulmonary adenocarcinoma"], read)
    let fixed = WordingResolver.Resolution(names: ["stroma"], weights: [1], share: 0.5, cosine: 0.45)
    r.remember(["fibrous tissue": fixed, "pulmonary adenocarcinoma": fixed])
    XCTAssertEqual(try r.resolve("fibrous tissue"), fixed)
    XCTAssertEqual(try r.resolve("pulmonary adenocarcinoma"), read, "a phrase already read keeps its reading")
    let stored = try WordingResolver(
      readings: ["fibrous tissue": fixed], vocabulary: vocab, languageModelSHA256: String(repeating: "0", count: 64),
      modelName: "m.gguf")
    XCTAssertNil(stored.modelPath)
    XCTAssertEqual(stored.modelName, "m.gguf")
    XCTAssertTrue(stored.canRead("STROMA") && stored.canRead("fibrous tissue"))
    XCTAssertFalse(stored.canRead("pleural effusion"))
    XCTAssertEqual(try stored.resolve("fibrous tissue"), fixed)
    XCTAssertEqual(try stored.resolve("pleural effusion").share, 0)
    XCTAssertNotEqual(stored.identity, stored.readingsIdentity)
    XCTAssertEqual(r.identity, r.readingsIdentity)
    // The JSON form round-trips exactly.
    let again = try JSONDecoder().decode(WordingResolver.Resolution.self, from: JSONEncoder().encode(read))
    XCTAssertEqual(again, read)
  }

  /// Guards the blend: a phrase with a resolution becomes `(1 - share) · own + share · Σ weight
  /// · embedding(template with name)` under each template; a phrase without one is unchanged.
  func testBlendArithmetic() throws {
    let bundle = try ModelBundle(path: Self.bundleDir)
    let D = bundle.clip.embedDim
    let templates = ["an image of {}.", "{}."]
    let phrases = [["tumour", "neoplasm"], ["stroma"]]
    let texts = templates.flatMap { t in phrases.joined().map { t.replacingOccurrences(of: "{}", with: $0) } }
    let own = try bundle.embedTexts(texts)
    let res = ["neoplasm": WordingResolver.Resolution(names: ["tumour", "fat"], weights: [0.75, 0.25], share: 0.6, cosine: 0.5)]
    var emb = own
    try ZeroShotClassifier.blend(&emb, phrases: phrases, templates: templates, res, bundle)
    for (ti, t) in templates.enumerated() {
      let named = try bundle.embedTexts(["tumour", "fat"].map { t.replacingOccurrences(of: "{}", with: $0) })
      for (pi, p) in phrases.joined().enumerated() {
        let row = ti * 3 + pi
        for d in 0..<D {
          let want =
            p == "neoplasm" ? 0.4 * own[row * D + d] + 0.6 * (0.75 * named[d] + 0.25 * named[D + d]) : own[row * D + d]
          XCTAssertEqual(emb[row * D + d], want, accuracy: 1e-6, "\(t) \(p) \(d)")
        }
      }
    }
  }

  /// Guards the classifier on a bundle with a resolver: its text embeddings are cached apart from the
  /// as-written ones, and a set whose phrases are all trained names scores exactly as written.
  func testClassifierWithResolver() throws {
    let bundle = try ModelBundle(path: Self.bundleDir)
    let cache = TestSupport.tempDir("eosin-wording-clf")
    let set = try PromptSet.inline("tumour,stroma,fat")
    let plain = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cache)
    let w = try WordingResolver(languageModel: Self.gguf, vocabulary: ["tumour", "stroma", "fat"], cacheDirectory: nil)
    bundle.wording = w
    let read = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cache)
    XCTAssertTrue(read.wording === w)
    XCTAssertFalse(read.fromCache, "the as-written cache entry must not answer for the resolver")
    XCTAssertEqual(read.classEmbeddings, plain.classEmbeddings)
    XCTAssertTrue(try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cache).fromCache)
  }

  /// Guards the trained vocabulary: class names always (captions always use them), synonyms
  /// unless held out (case aside); a file that is not a knowledge file is named.
  func testTrainedNames() throws {
    let dir = TestSupport.tempDir("eosin-wording-knowledge")
    try
      #"{"classes": [{"name": "lung adenocarcinoma", "synonyms": ["pulmonary adenocarcinoma", "lung ACA"]}, {"name": "cancer"}]}"#
      .write(toFile: dir + "/lung.json", atomically: true, encoding: .utf8)
    XCTAssertEqual(
      try WordingResolver.trainedNames(knowledgeDirectory: dir, heldOut: ["Pulmonary Adenocarcinoma", "cancer"]),
      ["lung adenocarcinoma", "lung ACA", "cancer"])
    try "{\"classes\": 3}".write(toFile: dir + "/bad.json", atomically: true, encoding: .utf8)
    XCTAssertThrowsError(try WordingResolver.trainedNames(knowledgeDirectory: dir, heldOut: [])) {
      XCTAssertTrue($0.localizedDescription.contains(dir + "/bad.json"), $0.localizedDescription)
    }
    XCTAssertThrowsError(try WordingResolver.trainedNames(knowledgeDirectory: dir + "/none", heldOut: []))
  }
}
