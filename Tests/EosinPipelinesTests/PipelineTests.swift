import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinWeights
import Foundation
import TestSupport
import XCTest

final class PromptSetTests: XCTestCase {
  func write(_ s: String) -> String {
    let p = TestSupport.tempDir() + "/set.json"
    try! s.write(toFile: p, atomically: true, encoding: .utf8)
    return p
  }

  func message(_ p: String) -> String {
    do { _ = try PromptSet.load(p); return "ok" } catch { return error.localizedDescription }
  }

  /// Guards: every shipped prompt set loads and validates.
  func testShippedSetsLoad() throws {
    for n in ["lung", "colorectal", "colorectal-coarse", "tissue", "malignancy"] {
      let s = try PromptSet.load(TestSupport.projectRoot + "/Prompts/zero-shot/\(n).json")
      XCTAssertFalse(s.classes.isEmpty)
      XCTAssertEqual(s.sha256.count, 64)
    }
  }

  /// Guards bad input: missing file, malformed JSON (line and column), empty class list,
  /// duplicate class names, template without {}.
  func testBadPromptSets() {
    XCTAssertTrue(
      message("/nonexistent/set.json").hasSuffix("prompt set not found; pass a JSON file or a name from Prompts/zero-shot"))
    let bad = write("{\n  \"name\": \"x\",\n  \"classes\": [,]\n}")
    XCTAssertEqual(message(bad), "\(bad): malformed JSON at line 3, column 15")
    let empty = write(#"{"name": "x", "classes": [], "templates": ["{}"]}"#)
    XCTAssertEqual(message(empty), "\(empty): the class list is empty")
    let dup = write(#"{"name": "x", "classes": [{"name": "A"}, {"name": "a"}], "templates": ["{}"]}"#)
    XCTAssertEqual(message(dup), "\(dup): duplicate class name 'a'")
    let tmpl = write(#"{"name": "x", "classes": [{"name": "a"}, {"name": "b"}], "templates": ["a photo of"]}"#)
    XCTAssertEqual(message(tmpl), "\(tmpl): template 'a photo of' has no {} placeholder")
    XCTAssertThrowsError(try PromptSet.inline(" , "))
    XCTAssertEqual(try PromptSet.inline("tumour, stroma").classes.map { $0.name }, ["tumour", "stroma"])
  }

  /// Guards bad input: unknown file types and empty folders are refused with the path named.
  func testInputCollectorErrors() throws {
    let d = TestSupport.tempDir()
    FileManager.default.createFile(atPath: d + "/notes.docx", contents: Data([1]))
    XCTAssertThrowsError(try InputCollector.collect([d + "/notes.docx"])) {
      XCTAssertTrue($0.localizedDescription.contains("unknown file type '.docx'"))
    }
    let e = TestSupport.tempDir()
    XCTAssertThrowsError(try InputCollector.collect([e])) {
      XCTAssertEqual($0.localizedDescription, "\(e): folder holds no images or slides")
    }
  }

  /// Guards label mapping through the knowledge notes, including the coarse grouping.
  func testLabelMapping() throws {
    let know = LabeledTiles.knowledge(TestSupport.projectRoot + "/Prompts/knowledge")
    let coarse = try PromptSet.load(TestSupport.projectRoot + "/Prompts/zero-shot/colorectal-coarse.json")
    let m = try LabeledTiles.mapLabels(
      ["Normal", "Polyp", "Low-grade_IN", "High-grade_IN", "Serrated_adenoma", "Adenocarcinoma"], to: coarse, knowledge: know)
    XCTAssertEqual(m["Normal"], 0)
    XCTAssertEqual(m["Polyp"], 0)
    XCTAssertEqual(m["Low-grade_IN"], 1)
    XCTAssertEqual(m["Serrated_adenoma"], 1)
    XCTAssertEqual(m["Adenocarcinoma"], 2)
    let lung = try PromptSet.load(TestSupport.projectRoot + "/Prompts/zero-shot/lung.json")
    XCTAssertEqual(
      try LabeledTiles.mapLabels(["lung_aca", "lung_scc", "lung_n"], to: lung, knowledge: know),
      ["lung_aca": 0, "lung_scc": 1, "lung_n": 2])
    XCTAssertThrowsError(try LabeledTiles.mapLabels(["kidney"], to: lung, knowledge: know)) {
      XCTAssertTrue($0.localizedDescription.contains("--label-map"))
    }
  }
}

final class MetricsTests: XCTestCase {
  /// Guards the metric code shared by training and eval.
  func testMetrics() {
    let cm = Metrics.confusion(truth: [0, 0, 0, 1], predicted: [0, 0, 1, 1], classes: 2)
    XCTAssertEqual(cm, [[2, 1], [0, 1]])
    XCTAssertEqual(Metrics.balancedAccuracy(cm), (2.0 / 3 + 1) / 2, accuracy: 1e-12)
    XCTAssertEqual(Metrics.ece(confidence: [1, 1], correct: [true, false]), 0.5, accuracy: 1e-9)
    // Logits drawn from a softmax at temperature 2.5: the fit recovers it.
    var logits: [Float] = [], truth: [Int] = []
    var rng = SystemRandomNumberGenerator()
    for _ in 0..<4000 {
      let l = (0..<3).map { _ in Float.random(in: -4...4, using: &rng) }
      let p = Metrics.softmax(l, classes: 3, temperature: 2.5)
      let u = Float.random(in: 0..<1, using: &rng)
      truth.append(u < p[0] ? 0 : (u < p[0] + p[1] ? 1 : 2))
      logits += l
    }
    XCTAssertEqual(Metrics.fitTemperature(logits, truth: truth, classes: 3), 2.5, accuracy: 0.3)
  }

  /// Guards the pooled temperature fit (sets with different class counts, one temperature) and
  /// the review-threshold rule used by `eosin train finalize`.
  func testPooledTemperatureAndReviewThreshold() throws {
    var rng = SystemRandomNumberGenerator()
    var sets: [(logits: [Float], truth: [Int], classes: Int)] = []
    for K in [3, 5] {
      var logits: [Float] = [], truth: [Int] = []
      for _ in 0..<3000 {
        let l = (0..<K).map { _ in Float.random(in: -4...4, using: &rng) }
        let p = Metrics.softmax(l, classes: K, temperature: 1.8)
        var u = Float.random(in: 0..<1, using: &rng), k = 0
        while k < K - 1 && u >= p[k] {
          u -= p[k]
          k += 1
        }
        truth.append(k)
        logits += l
      }
      sets.append((logits, truth, K))
    }
    XCTAssertEqual(Metrics.fitTemperature(pooled: sets), 1.8, accuracy: 0.25)
    // Confidences between grid points; 0.655 is the last wrong one, so 0.66 is the lowest
    // threshold whose kept answers are all right.
    let conf: [Float] = [0.405, 0.605, 0.655, 0.805, 0.905], ok = [false, true, false, true, true]
    // Without the small-sample guard (one kept answer is enough, any bound): the point estimate.
    let t = try XCTUnwrap(
      Metrics.guardedThreshold(confidence: conf, correct: ok, targetAccuracy: 1, minimumKept: 1, slack: 1))
    XCTAssertEqual(t.threshold, 0.66, accuracy: 1e-4)
    XCTAssertEqual(t.coverage, 0.4, accuracy: 1e-9)
    XCTAssertEqual(
      Metrics.guardedThreshold(confidence: conf, correct: ok, targetAccuracy: 0.5, minimumKept: 1, slack: 1)?.threshold ?? 0, 0.3,
      accuracy: 1e-4)
  }

  /// Guards the small-sample rule of the review threshold: the Wilson lower bound (values from
  /// the closed form) and a threshold that needs the bound within 0.05 of the target as well as
  /// the point estimate: 19 of 20 right (0.95, bound 0.80) is not enough for 0.95; 100 of 100 is.
  func testGuardedThresholdNeedsTheLowerBound() {
    XCTAssertEqual(Metrics.wilsonLowerBound(successes: 19, trials: 20), 0.8040, accuracy: 1e-3)
    XCTAssertEqual(Metrics.wilsonLowerBound(successes: 100, trials: 100), 0.9737, accuracy: 1e-3)
    XCTAssertEqual(Metrics.wilsonLowerBound(successes: 0, trials: 10), 0, accuracy: 1e-9)
    let few = [Float](repeating: 0.9, count: 20), fewOK = [false] + [Bool](repeating: true, count: 19)
    XCTAssertNil(Metrics.guardedThreshold(confidence: few, correct: fewOK, targetAccuracy: 0.95))
    // 100 confident right answers above 30 uncertain ones that are half wrong.
    let conf = [Float](repeating: 0.95, count: 100) + [Float](repeating: 0.5, count: 30)
    let ok = [Bool](repeating: true, count: 100) + (0..<30).map { $0 % 2 == 0 }
    let t = Metrics.guardedThreshold(confidence: conf, correct: ok, targetAccuracy: 0.95)
    XCTAssertEqual(t?.threshold ?? 0, 0.51, accuracy: 1e-4)
    XCTAssertEqual(t?.coverage ?? 0, 100.0 / 130, accuracy: 1e-9)
    XCTAssertNil(Metrics.guardedThreshold(confidence: conf, correct: ok, targetAccuracy: 0.95, minimumKept: 101))
  }
}

final class ZeroShotTests: XCTestCase {
  static let bundleDir: String = { try! TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-bundle")) }()

  /// Guards the shared evaluation numbers: they agree with each other and with the review
  /// policy applied tile by tile.
  func testZeroShotScoresAreConsistent() throws {
    let bundle = try ModelBundle(path: Self.bundleDir)
    let clf = try ZeroShotClassifier(bundle: bundle, promptSet: try PromptSet.inline("tumour,stroma,fat"), cacheDir: nil)
    let imgs = (0..<12).map { i in TestSupport.syntheticHE(width: 32 + i, height: 32) }
    let emb = SlideIndex.embedImages(imgs, bundle: bundle)
    let preds = clf.predict(emb)
    let truth = (0..<12).map { $0 % 3 }
    let policy = ReviewPolicy(thresholds: bundle.thresholds)
    let sc = ZeroShotScores(logits: clf.logits(emb), predictions: preds, truth: truth, classifier: clf, policy: policy)
    XCTAssertEqual(sc.count, 12)
    XCTAssertEqual(sc.confusion.flatMap { $0 }.reduce(0, +), 12)
    let right = zip(preds, truth).filter { $0.0.top == $0.1 }.count
    XCTAssertEqual(sc.accuracy, Double(right) / 12, accuracy: 1e-12)
    XCTAssertEqual(sc.selective[0].coverage, 1)
    XCTAssertEqual(sc.selective[0].accuracy, sc.accuracy, accuracy: 1e-12)
    let kept = preds.filter { policy.tileFlags($0, classifier: clf).isEmpty }.count
    XCTAssertEqual(sc.unflaggedShare, Double(kept) / 12, accuracy: 1e-12)
    XCTAssertEqual(sc.json["tiles"] as? Int, 12)
  }

  /// Guards the classifier's contracts on a tiny random model: probabilities sum to one, text
  /// embeddings are cached on disk and reused, and top-K pooling gives a verdict with evidence.
  func testClassifierAndPooling() throws {
    let bundle = try ModelBundle(path: Self.bundleDir)
    let set = try PromptSet.inline("tumour,stroma,fat")
    let cache = TestSupport.tempDir("eosin-cache")
    let a = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cache)
    XCTAssertFalse(a.fromCache)
    let b = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: cache)
    XCTAssertTrue(b.fromCache)
    XCTAssertEqual(a.classEmbeddings, b.classEmbeddings)
    let img = TestSupport.syntheticHE(width: 64, height: 64)
    let preds = a.predict(SlideIndex.embedImages([img, img.crop(x: 0, y: 0, width: 32, height: 32)], bundle: bundle))
    for p in preds { XCTAssertEqual(p.probs.reduce(0, +), 1, accuracy: 1e-5) }
    // A synthetic slide: cached index on the second call.
    let sp = TestSupport.tempDir() + "/s.tiff"
    try TestSupport.writeSyntheticSlide(at: sp, width: 1536, height: 1024, levels: 2, mpp: 0.5)
    let s = try Slide(path: sp)
    let m = try TissueDetector().detect(s)
    let e1 = try SlideIndex.embed(slide: s, tissue: m, bundle: bundle, overrideMPP: nil, cacheDir: cache)
    let e2 = try SlideIndex.embed(slide: s, tissue: m, bundle: bundle, overrideMPP: nil, cacheDir: cache)
    XCTAssertFalse(e1.fromCache)
    XCTAssertTrue(e2.fromCache)
    XCTAssertEqual(e1.embeddings, e2.embeddings)
    XCTAssertGreaterThan(e1.tiles.count, 10)
    let r = SlidePooling.pool(
      a.predict(e1.embeddings), tiles: e1.tiles, extent0: e1.extent0, classifier: a, k: 5,
      facts: InputFacts(tissueFraction: m.tissueFraction), policy: ReviewPolicy(thresholds: bundle.thresholds))
    XCTAssertEqual(r.probs.reduce(0, +), 1, accuracy: 1e-5)
    XCTAssertEqual(r.evidence[r.verdict].count, 5)
    XCTAssertEqual(r.fractions.reduce(0, +), 1, accuracy: 1e-9)
  }

  /// Guards the review policy: each condition raises its flag with a plain-words reason.
  func testReviewPolicyFlags() {
    let pol = ReviewPolicy(thresholds: ReviewThresholds())
    let c = Confidence(probability: 0.4, margin: 0.05, promptSpread: 0.3, domain: 0.01, tissueFraction: 0.001)
    let f = pol.flags(
      c, verdict: "squamous", runnerUp: "adeno", facts: InputFacts(mppMissing: true, notBrightfield: "dark background"))
    XCTAssertEqual(
      Set(f.map { $0.code }),
      ["low-probability", "small-margin", "prompt-sensitive", "out-of-domain", "little-tissue", "no-mpp", "not-he"])
    XCTAssertTrue(f.contains { $0.reason == "squamous vs adeno differ by only 0.05" })
    XCTAssertTrue(
      pol.flags(
        Confidence(probability: 0.95, margin: 0.9, promptSpread: 0.01, domain: 0.5), verdict: "a", runnerUp: "b",
        facts: InputFacts()
      ).isEmpty)
  }
}

final class ReviewRuleTests: XCTestCase {
  /// Guards the REPL's argument splitting: quotes, escapes, and an unterminated quote.
  func testShellWords() throws {
    XCTAssertEqual(try ShellWords.split(":open \"my slide.svs\""), [":open", "my slide.svs"])
    XCTAssertEqual(try ShellWords.split(":open my\\ slide.svs b.png"), [":open", "my slide.svs", "b.png"])
    XCTAssertEqual(try ShellWords.split(":heatmap 'benign lung tissue' out.png"), [":heatmap", "benign lung tissue", "out.png"])
    XCTAssertEqual(try ShellWords.split("  a   \"b \\\" c\"  "), ["a", "b \" c"])
    XCTAssertEqual(try ShellWords.split("\"\""), [""])
    XCTAssertThrowsError(try ShellWords.split(":open \"unterminated"))
  }

  /// Guards the contradiction check across report fields: a malignant class beside a benign one
  /// flags both, naming the other field; agreeing or neutral fields are not flagged.
  func testContradictions() {
    let c = ReviewPolicy.contradictions([
      ("Diagnosis", "lung adenocarcinoma"), ("Malignancy", "benign tissue"), ("Organ", nil), ("Other", "malignant tumour"),
    ])
    XCTAssertEqual(c[0]?.code, "contradiction")
    XCTAssertTrue(c[0]!.reason.contains("Malignancy says benign tissue"), c[0]!.reason)
    XCTAssertTrue(c[1]!.reason.contains("Diagnosis says lung adenocarcinoma"), c[1]!.reason)
    XCTAssertNil(c[2])
    XCTAssertNotNil(c[3])
    XCTAssertTrue(ReviewPolicy.contradictions([("A", "lung adenocarcinoma"), ("B", "malignant tumour")]).isEmpty)
  }

  /// Guards: a NaN score is a review flag, never silently passing the thresholds.
  func testNonFiniteIsFlagged() {
    let pol = ReviewPolicy(thresholds: ReviewThresholds())
    let f = pol.flags(
      Confidence(probability: .nan, margin: .nan, promptSpread: 0, domain: 0.5), verdict: "a", runnerUp: "b", facts: InputFacts())
    XCTAssertTrue(f.contains { $0.code == "non-finite" })
  }

  /// Guards report manifests: a byte-order mark, an mpp column, a duplicate and a bad mpp are
  /// reported per line while the other rows are kept; report names are unique per path.
  func testReportManifestAndNames() throws {
    let d = TestSupport.tempDir()
    let m = d + "/m.csv"
    try "\u{FEFF}Slide,MPP\na.svs,0.25\nb.svs,\na.svs,\nc.svs,-1\n/abs/d.svs,\n".write(
      toFile: m, atomically: true, encoding: .utf8)
    let man = try ReportManifest.load(m)
    XCTAssertEqual(man.rows.map(\.path), [d + "/a.svs", d + "/b.svs", "/abs/d.svs"])
    XCTAssertEqual(man.rows[0].mpp, 0.25)
    XCTAssertNil(man.rows[1].mpp)
    XCTAssertEqual(man.problems.count, 2)
    XCTAssertTrue(man.problems[0].hasPrefix("\(m):4: slide 'a.svs' is already listed on line 2"), man.problems[0])
    XCTAssertTrue(man.problems[1].hasPrefix("\(m):5: mpp '-1'"), man.problems[1])
    let names = ReportNaming.names(["x/a.svs", "y/a.ndpi", "a-1.svs", "b.svs"])
    XCTAssertEqual(Set(names).count, 4)
    XCTAssertEqual(names[2], "a-1")
    XCTAssertEqual(names[3], "b")
    XCTAssertEqual(names, ReportNaming.names(["x/a.svs", "y/a.ndpi", "a-1.svs", "b.svs"]))
  }
}

final class ClassSupportTests: XCTestCase {
  /// Guards the organ lexicon: organs are found at word starts, and words that name no organ
  /// give none.
  func testOrganLexicon() {
    XCTAssertEqual(OrganLexicon.organs(in: "Gleason pattern 4 prostatic carcinoma"), ["prostate"])
    XCTAssertEqual(OrganLexicon.organs(in: "pulmonary adenocarcinoma"), ["lung"])
    XCTAssertEqual(OrganLexicon.organs(in: "normal colonic mucosa"), ["colorectal"])
    XCTAssertEqual(OrganLexicon.organs(in: "adrenal cortex"), ["adrenal"])
    XCTAssertEqual(OrganLexicon.organs(in: "renal cell carcinoma"), ["kidney"])
    XCTAssertTrue(OrganLexicon.organs(in: "malignant tumour").isEmpty)
    XCTAssertTrue(OrganLexicon.organs(in: "stroma").isEmpty)
  }

  /// Guards the class-support check: a class naming only untrained organs is flagged; a class
  /// of a trained organ, or naming no organ, is flagged only when the set offers unsupported
  /// alternatives it cannot rule out; a set's own organ counts for its classes.
  func testClassSupport() throws {
    let trained = ["colorectal", "lung"]
    let set = try PromptSet.inline("prostate adenocarcinoma,lung adenocarcinoma,tumour")
    XCTAssertEqual(
      ClassSupport.flag(className: "prostate adenocarcinoma", set: set, trainedOrgans: trained)?.code, "class-unsupported")
    let lung = ClassSupport.flag(className: "lung adenocarcinoma", set: set, trainedOrgans: trained)
    XCTAssertEqual(lung?.code, "alternatives-unsupported")
    XCTAssertTrue(lung?.reason.contains("also offers prostate adenocarcinoma") ?? false, lung?.reason ?? "")
    XCTAssertEqual(ClassSupport.flag(className: "tumour", set: set, trainedOrgans: trained)?.code, "alternatives-unsupported")
    XCTAssertNil(ClassSupport.flag(className: "prostate adenocarcinoma", set: set, trainedOrgans: nil))
    let known = try PromptSet.inline("colorectal adenocarcinoma,lung adenocarcinoma,tumour")
    for c in ["colorectal adenocarcinoma", "lung adenocarcinoma", "tumour"] {
      XCTAssertNil(ClassSupport.flag(className: c, set: known, trainedOrgans: trained), c)
    }
    var organSet = try PromptSet.inline("grade 1,grade 2")
    organSet.organ = "kidney"
    XCTAssertNotNil(ClassSupport.flag(className: "grade 1", set: organSet, trainedOrgans: trained))
  }
}

final class WeightsManifestTests: XCTestCase {
  /// Guards the Codable manifest: the committed manifest decodes and re-encodes to the same JSON
  /// (every field kept), without escaped slashes.
  func testCommittedManifestRoundTrips() throws {
    let root = TestSupport.projectRoot
    for p in [
      root + "/" + ModelBundle.defaultRelativePath + "/manifest.json", root + "/Weights/records/eosin-small-v1-manifest.json",
    ] {
      let m = try WeightsManifest.load(p)
      XCTAssertFalse(m.files.isEmpty, p)
      XCTAssertNotNil(m.review?.maxOutlierDistance, p)
      let again = try m.encoded()
      XCTAssertFalse(String(decoding: again, as: UTF8.self).contains("\\/"), p)
      let a = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: p))) as! NSDictionary
      let b = try JSONSerialization.jsonObject(with: again) as! NSDictionary
      XCTAssertEqual(a, b, p)
    }
  }
}

final class ConsistencyTests: XCTestCase {
  /// Guards the one class-matching rule the chat and report gates share: an answer naming
  /// another organ's class is found in that set and not in this one, and a phrase in no set
  /// names nothing.
  func testAssertedClassAcrossSets() throws {
    var lung = try PromptSet.inline("lung adenocarcinoma,benign lung tissue")
    lung.name = "lung"
    var crc = try PromptSet.inline("colorectal adenocarcinoma,low-grade intraepithelial neoplasia")
    crc.name = "colorectal"
    func asserted(_ t: String, _ s: PromptSet) -> String? { ClaimGate.assertedClass(t.lowercased(), t, s)?.0 }
    let a = "The findings are consistent with colorectal adenocarcinoma."
    XCTAssertNil(asserted(a, lung))
    XCTAssertEqual(asserted(a, crc), "colorectal adenocarcinoma")
    XCTAssertEqual(asserted("This is low-grade intraepithelial neoplasia.", crc), "low-grade intraepithelial neoplasia")
    XCTAssertNil(asserted("There is no colorectal adenocarcinoma here.", crc))
    XCTAssertNil(asserted("The tissue is from the skin.", lung))
  }
}

final class OutlierModelTests: XCTestCase {
  var rng = SystemRandomNumberGenerator()

  /// A standard normal draw (Box-Muller).
  func gauss() -> Float {
    let u = Float.random(in: 1e-6..<1, using: &rng), v = Float.random(in: 0..<1, using: &rng)
    return (-2 * logf(u)).squareRoot() * cosf(2 * .pi * v)
  }

  /// Guards the out-of-domain model: on two Gaussian classes with a correlated covariance, the
  /// distance of training-like points is about sqrt(D), a point off the data's plane is far even
  /// when its cosine to a class mean is high, and the model round-trips through safetensors.
  func testFitDistancesAndRoundTrip() throws {
    let D = 6
    var emb: [Float] = [], labels: [Int] = []
    for n in 0..<4000 {
      let k = n % 2
      // Dimension 0 carries the class; dimension 5 is nearly constant (tiny variance).
      var x = (0..<D).map { _ in gauss() }
      x[0] += k == 0 ? 5 : -5
      x[5] = 0.01 * x[5]
      x[1] += 0.8 * x[2]
      emb += x
      labels.append(k)
    }
    let m = try XCTUnwrap(OutlierModel.fit(embeddings: emb, labels: labels, dim: D, ridge: 1e-6))
    let d = m.distances(Array(emb[0..<(200 * D)]))
    let meanSq = d.map { Double($0 * $0) }.reduce(0, +) / Double(d.count)
    XCTAssertEqual(meanSq, Double(D), accuracy: 1.0)
    // A point at the class-0 mean but moved 0.5 along the near-constant direction.
    var far = [Float](repeating: 0, count: D)
    far[0] = 5
    far[5] = 0.5
    XCTAssertGreaterThan(m.distances(far)[0], 20)
    let dir = TestSupport.tempDir("eosin-outlier")
    try SafeTensorsWriter.write(m.tensors, to: dir + "/outlier.safetensors")
    let back = try OutlierModel(file: dir + "/outlier.safetensors")
    XCTAssertEqual(back.distances(far), m.distances(far))
    XCTAssertNil(OutlierModel.fit(embeddings: [1, 2], labels: [0], dim: 2))
  }
}

extension OutlierModelTests {
  /// Guards the statistics rows' fit: with the relative ridge, a column's units do not matter
  /// (scaling one column by 1000 leaves every distance as it was, where an absolute ridge would
  /// swamp a column of tiny variance), and the kind round-trips under its metadata name.
  func testTissueRowsFitIgnoresUnits() throws {
    let D = 5
    var emb: [Float] = [], labels: [Int] = []
    for n in 0..<3000 {
      var x = (0..<D).map { _ in gauss() }
      x[0] += n % 2 == 0 ? 4 : -4
      x[4] *= 0.001  // a histogram share beside optical densities
      emb += x
      labels.append(n % 2)
    }
    var scaled = emb
    for n in 0..<3000 { scaled[n * D + 4] *= 1000 }
    let probe: [Float] = [4, 0.5, -0.5, 1, 0.004], probeScaled: [Float] = [4, 0.5, -0.5, 1, 4]
    let a = try XCTUnwrap(OutlierModel.fit(embeddings: emb, labels: labels, dim: D, features: .backboneAndTissue))
    let b = try XCTUnwrap(OutlierModel.fit(embeddings: scaled, labels: labels, dim: D, features: .backboneAndTissue))
    XCTAssertEqual(a.distances(probe)[0], b.distances(probeScaled)[0], accuracy: 1e-2)
    XCTAssertGreaterThan(a.distances(probe)[0], 3.5, "4 standard deviations along the tiny column count")
    let absolute = try XCTUnwrap(OutlierModel.fit(embeddings: emb, labels: labels, dim: D, features: .backbone))
    XCTAssertLessThan(absolute.distances(probe)[0], 2, "an absolute ridge hides the tiny column")
    let dir = TestSupport.tempDir("eosin-outlier-tissue")
    try SafeTensorsWriter.write(a.tensors, metadata: a.metadata, to: dir + "/outlier.safetensors")
    let back = try OutlierModel(file: dir + "/outlier.safetensors")
    XCTAssertEqual(back.features, .backboneAndTissue)
    XCTAssertEqual(back.distances(probe), a.distances(probe))
  }
}

extension OutlierModelTests {
  /// Guards the per-set scales: two training sets, one spread three times wider than the other.
  /// One pooled limit at the 95th percentile of val flags mostly the wide set's tiles; with each
  /// set's distances scaled by its own val spread, the same rule flags about 5% of each, a point
  /// between the tight set's classes that the pooled limit lets pass is caught, and the scales
  /// round-trip (a file without them reads as all 1).
  func testScalesPutEveryTrainingSetOnOneLimit() throws {
    let D = 4
    // Classes 0 and 1 (set 0) tight around +-6 on dimension 0; classes 2 and 3 (set 1) around
    // +-6 on dimension 1, three times as noisy in every direction.
    func draw(_ n: Int) -> (rows: [Float], labels: [Int]) {
      var rows: [Float] = [], labels: [Int] = []
      for i in 0..<n {
        let k = i % 4
        let s: Float = k < 2 ? 1 : 3
        var x = (0..<D).map { _ in s * gauss() }
        x[k < 2 ? 0 : 1] += k % 2 == 0 ? 30 : -30
        rows += x
        labels.append(k)
      }
      return (rows, labels)
    }
    let train = draw(8000), val = draw(2000), test = draw(4000)
    let pooled = try XCTUnwrap(OutlierModel.fit(embeddings: train.rows, labels: train.labels, dim: D, ridge: 1e-6))
    XCTAssertEqual(pooled.scales, [1, 1, 1, 1])
    func shares(_ m: OutlierModel) -> (tight: Double, wide: Double, limit: Float) {
      let limit = OutlierModel.limits(distances: m.distances(val.rows), groups: val.labels.map(String.init), quantile: 0.95)
        .tile
      let d = m.distances(test.rows)
      var over = [0, 0], count = [0, 0]
      for (i, k) in test.labels.enumerated() {
        count[k / 2] += 1
        if d[i] > limit { over[k / 2] += 1 }
      }
      return (Double(over[0]) / Double(count[0]), Double(over[1]) / Double(count[1]), limit)
    }
    let before = shares(pooled)
    XCTAssertLessThan(before.tight, 0.01)
    XCTAssertGreaterThan(before.wide, 0.08)
    let scaled = pooled.withScales(validation: val.rows, groupOf: [0, 0, 1, 1], quantile: 0.95)
    XCTAssertEqual(scaled.scales[0], scaled.scales[1])
    XCTAssertGreaterThan(scaled.scales[0], scaled.scales[2])
    let after = shares(scaled)
    XCTAssertEqual(after.tight, 0.05, accuracy: 0.025)
    XCTAssertEqual(after.wide, 0.05, accuracy: 0.025)
    // Four tight standard deviations off a tight class: pooled it passes, scaled it is flagged.
    let odd: [Float] = [30, 0, 0, 4.5]
    XCTAssertLessThan(pooled.distances(odd)[0], before.limit)
    XCTAssertGreaterThan(scaled.distances(odd)[0], after.limit)
    let dir = TestSupport.tempDir("eosin-outlier-scales")
    try SafeTensorsWriter.write(scaled.tensors, metadata: scaled.metadata, to: dir + "/outlier.safetensors")
    XCTAssertEqual(try OutlierModel(file: dir + "/outlier.safetensors").distances(odd), scaled.distances(odd))
    var old = pooled.tensors
    old["scales"] = nil
    try SafeTensorsWriter.write(old, metadata: pooled.metadata, to: dir + "/old.safetensors")
    XCTAssertEqual(try OutlierModel(file: dir + "/old.safetensors").scales, [1, 1, 1, 1])
    old["scales"] = Tensor(shape: [4], data: [1, 1, 0, 1])
    try SafeTensorsWriter.write(old, metadata: pooled.metadata, to: dir + "/bad.safetensors")
    XCTAssertThrowsError(try OutlierModel(file: dir + "/bad.safetensors")) {
      XCTAssertTrue("\($0)".contains("scales"), "\($0)")
    }
  }
}

/// bf16 inference of the default weights on real tiles from every tile set in ../shared/data.
final class BF16RealTileTests: XCTestCase {
  func testDefaultWeightsBF16MatchFP32OnRealTiles() throws {
    guard let data = TestSupport.sharedData else { throw XCTSkip("../shared/data is absent") }
    let weights = TestSupport.projectRoot + "/" + ModelBundle.defaultRelativePath
    let fp32 = try ModelBundle(path: weights), bf16 = try ModelBundle(path: weights, precision: .bf16)
    let fm = FileManager.default
    var paths: [String] = []
    for set in (try? fm.contentsOfDirectory(atPath: data + "/tiles"))?.sorted() ?? [] {
      guard let e = fm.enumerator(atPath: data + "/tiles/" + set) else { continue }
      let files = (e.allObjects as? [String] ?? []).filter {
        $0.hasSuffix(".jpeg") || $0.hasSuffix(".jpg") || $0.hasSuffix(".png")
      }
      paths += files.sorted().prefix(3).map { data + "/tiles/" + set + "/" + $0 }
    }
    guard !paths.isEmpty else { throw XCTSkip("no tiles under ../shared/data/tiles") }
    let imgs = try paths.map { try ImageCodec.read($0) }
    let a = SlideIndex.embedImages(imgs, bundle: fp32), b = SlideIndex.embedImages(imgs, bundle: bf16)
    let D = fp32.clip.embedDim
    var worst: Float = 1
    for i in 0..<imgs.count {
      var dot: Float = 0
      for j in 0..<D { dot += a[i * D + j] * b[i * D + j] }  // both unit-norm
      worst = min(worst, dot)
    }
    XCTAssertGreaterThanOrEqual(worst, 0.999, "worst cosine over \(imgs.count) tiles")
  }
}

/// Shards from --shard, Slurm and Kubernetes indexed Jobs.
final class ShardSpecTests: XCTestCase {
  func testSources() throws {
    XCTAssertEqual(try ShardSpec.resolve("1/3", environment: [:]).index, 1)
    let slurm = try ShardSpec.resolve(nil, environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"])
    XCTAssertEqual([slurm.index, slurm.count], [2, 4])
    let k8s = try ShardSpec.resolve(nil, environment: ["JOB_COMPLETION_INDEX": "0", "EOSIN_SHARD_COUNT": "5"])
    XCTAssertEqual([k8s.index, k8s.count], [0, 5])
    XCTAssertThrowsError(try ShardSpec.resolve(nil, environment: ["JOB_COMPLETION_INDEX": "0"]))
    XCTAssertThrowsError(try ShardSpec.resolve(nil, environment: ["JOB_COMPLETION_INDEX": "5", "EOSIN_SHARD_COUNT": "5"]))
    let all = try ShardSpec.resolve(nil, environment: [:])
    XCTAssertEqual([all.index, all.count], [0, 1])
  }
}
