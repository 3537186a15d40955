import EosinModels
import EosinPipelines
import EosinSlide
import EosinTraining
import EosinWeights
import TestSupport
import XCTest

final class FinalizeTests: XCTestCase {
  /// Writes a labelled tile folder: `groups` groups of one 48-px JPEG each, labels in turn, each
  /// label with its own tint so a random encoder still sees differences.
  func tileSet(_ root: String, _ name: String, labels: [String], groups: Int) throws -> String {
    let dir = root + "/" + name
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var csv = "path,label,group\n"
    for g in 0..<groups {
      let l = labels[g % labels.count], k = g % labels.count
      var img = TestSupport.syntheticHE(width: 48, height: 48)
      for i in stride(from: 0, to: img.pixels.count, by: 3) {
        img.pixels[i + k % 3] = UInt8(min(255, Int(img.pixels[i + k % 3]) + 30 * (k + 1) + g % 7))
      }
      let f = "\(l)-\(g).jpg"
      try Data(ImageCodec.encodeJPEG(img, quality: 90)).write(to: URL(fileURLWithPath: dir + "/" + f))
      csv += "\(f),\(l),\(name)-g\(g)\n"
    }
    try csv.write(toFile: dir + "/manifest.csv", atomically: true, encoding: .utf8)
    return dir
  }

  /// Finalize over two diagnostic sets and one organ set, on a tiny random bundle: calibration
  /// and thresholds come from both sets' val splits, every set gets its own, extra and
  /// malignancy rows, the organ set gets organ and out-of-domain rows, the trained organs are
  /// the diagnostic sets' organs only, and the manifest lists the outlier model with its hash.
  func testFinalizeCoversEveryDataset() throws {
    let root = TestSupport.tempDir("finalize")
    defer { try? FileManager.default.removeItem(atPath: root) }
    let w = try TestSupport.writeTinyBundle(at: root + "/weights")
    let lung = try tileSet(root, "tiny-lung", labels: ["lung_aca", "lung_scc", "lung_n"], groups: 100)
    let prostate = try tileSet(root, "tiny-prostate", labels: ["stroma_or_benign", "gleason3", "gleason4"], groups: 100)
    let organs = try tileSet(root, "tiny-organs", labels: ["kidney", "brain"], groups: 20)
    let prompts = TestSupport.projectRoot + "/Prompts"
    var lines: [String] = []
    let f = WeightsFinalizer(
      weights: w, name: "tiny-v2",
      datasets: [
        FinalizeDataset(name: "Tiny lung", dir: lung, promptSets: ["lung", "malignancy"], terms: "test"),
        FinalizeDataset(name: "Tiny prostate", dir: prostate, promptSets: ["prostate"], terms: "test"),
      ],
      organData: [FinalizeDataset(name: "Tiny organs", dir: organs, promptSets: ["organ"], terms: "test")],
      targetAccuracy: 0.9, record: nil, lodo: nil, languageModel: nil, dirs: { [prompts + "/" + $0] },
      makeGrounded: { _, _ in throw TrainingError.data("no language model in this test") }, log: { lines.append($0) })
    // Adapters from `train lm-adapters` are named with their projector and hashed.
    try FileManager.default.createDirectory(atPath: w + "/lm-adapters", withIntermediateDirectories: true)
    for name in ["projector.safetensors", "adapters.safetensors"] {
      try Data(name.utf8).write(to: URL(fileURLWithPath: w + "/lm-adapters/" + name))
    }
    let (manifest, md) = try f.run()
    XCTAssertEqual(manifest.languageModel?.projector, "lm-adapters/projector.safetensors")
    XCTAssertEqual(manifest.languageModel?.adapters, "lm-adapters/adapters.safetensors")
    XCTAssertEqual(
      manifest.files["lm-adapters/adapters.safetensors"]?.sha256, try SHA256.hex(fileAt: w + "/lm-adapters/adapters.safetensors"))
    for row in [
      "| Tiny lung | lung |", "| Tiny lung (malignancy) | malignancy |", "| Tiny prostate | prostate |",
      "| Tiny prostate (cross: malignancy set) | malignancy |", "| Tiny organs | val + test |",
      "| Tiny lung | lung | H&E stain shift", "| Tiny prostate | prostate | JPEG re-encoding",
    ] {
      XCTAssertTrue(md.contains(row), "EVALUATION lacks the row \(row)")
    }
    XCTAssertTrue(md.contains("### Organ recognition"))
    XCTAssertTrue(md.contains("| Tiny organs | "), "no organ-recognition row for the organ set")
    XCTAssertTrue(md.contains("## Leave one dataset out"))
    // eval lodo replaces that section only, as finalize would write it from lodo.json.
    let replaced = try XCTUnwrap(LeaveOneOut.replacingSection(in: md, with: "| endometrium | 5 | 1516 |\n"))
    XCTAssertEqual(
      replaced,
      md.replacingOccurrences(
        of: LeaveOneOut.section(nil, file: "lodo.json"), with: LeaveOneOut.section("| endometrium | 5 | 1516 |\n", file: "")))
    XCTAssertTrue(replaced.contains("## Decoder"))
    XCTAssertNil(LeaveOneOut.replacingSection(in: "# no such section\n", with: "x"))
    XCTAssertEqual(manifest.review?.trainedOrgans, ["lung", "prostate"])
    // Each prompt set the datasets use gets its own threshold, keyed by name and content hash.
    let sets = try ["lung", "prostate", "malignancy", "organ"].map {
      try PromptSet.load($0, searchDirs: [prompts + "/zero-shot"])
    }
    XCTAssertEqual(Set(manifest.review?.minProbabilityBySet?.keys ?? [:].keys), Set(sets.map { ReviewThresholds.key(for: $0) }))
    XCTAssertTrue(md.contains("| prostate | "), "no threshold row for the prostate set")
    XCTAssertTrue(manifest.calibration?.fittedOn?.contains("Tiny prostate (prostate)") ?? false)
    XCTAssertEqual(manifest.name, "tiny-v2")
    XCTAssertEqual(manifest.version, 2)
    let outlier = try XCTUnwrap(manifest.files["clip/outlier.safetensors"])
    XCTAssertEqual(outlier.sha256, try SHA256.hex(fileAt: w + "/clip/outlier.safetensors"))
    XCTAssertEqual(manifest.data?.prefix(3).map(\.name), ["Tiny lung", "Tiny prostate", "Tiny organs"])
    // Weights finalized now record the stratified rule; eosin-small-v1's manifest (kept as a
    // record), the hash rule.
    XCTAssertEqual(manifest.splitRule, "group-stratified-by-label")
    XCTAssertTrue(manifest.splitsStratifiedByLabel)
    let v1 = try WeightsManifest.load(TestSupport.projectRoot + "/Weights/records/eosin-small-v1-manifest.json")
    XCTAssertFalse(v1.splitsStratifiedByLabel)
    let groups = (0..<30).map { "g\($0)" }, labels = groups.map { _ in "a" }
    let hashed = TileManifest.splits(dataset: "d", groups: groups, labels: labels, stratified: false)
    XCTAssertEqual(hashed, Dictionary(uniqueKeysWithValues: groups.map { ($0, TileManifest.split(dataset: "d", group: $0)) }))
    // The bundle reloads with what finalize wrote.
    let b = try ModelBundle(path: w)
    XCTAssertEqual(b.thresholds.trainedOrgans, ["lung", "prostate"])
    XCTAssertNotNil(b.outlier)
    // Out-of-domain scales: one positive factor per class (lung's three, then prostate's three),
    // shared by the classes of one training set.
    let scales = try XCTUnwrap(b.outlier?.scales)
    XCTAssertEqual(scales.count, 6)
    XCTAssertTrue(scales.allSatisfy { $0 > 0 && $0.isFinite }, "\(scales)")
    XCTAssertEqual(Set(scales.prefix(3)).count, 1, "\(scales)")
    XCTAssertEqual(Set(scales.suffix(3)).count, 1, "\(scales)")
    try checkBackboneOutlier(b, weights: w)
  }

  /// Guards finalize `--wording lm`: the vocabulary is written beside the CLIP and hashed, the
  /// manifest names the language model's sha256, the report says how prompts were read, and a
  /// bundle loaded later reads them the same way only with that very language model file; a
  /// damaged vocabulary is refused in one line naming it.
  func testFinalizeWithWording() throws {
    let root = TestSupport.tempDir("finalize-wording")
    defer { try? FileManager.default.removeItem(atPath: root) }
    let w = try TestSupport.writeTinyBundle(at: root + "/weights")
    let lung = try tileSet(root, "tiny-lung", labels: ["lung_aca", "lung_scc", "lung_n"], groups: 40)
    let prompts = TestSupport.projectRoot + "/Prompts"
    let gguf = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-llama-F32.gguf"
    var f = WeightsFinalizer(
      weights: w, name: "tiny-v2",
      datasets: [FinalizeDataset(name: "Tiny lung", dir: lung, promptSets: ["lung"], terms: "test")], organData: [],
      targetAccuracy: 0.9, record: nil, lodo: nil, languageModel: nil, dirs: { [prompts + "/" + $0] },
      makeGrounded: { _, _ in throw TrainingError.data("no language model in this test") }, log: { _ in })
    let names = ["lung adenocarcinoma", "lung squamous cell carcinoma", "benign lung tissue", "no interpretable tissue"]
    f.wording = (names, try WordingResolver(languageModel: gguf, vocabulary: names, cacheDirectory: nil))
    let (manifest, md) = try f.run()
    let entry = try XCTUnwrap(manifest.wording)
    XCTAssertEqual(entry.vocabulary, "clip/vocabulary.json")
    XCTAssertEqual(entry.languageModelSHA256, try SHA256.hex(fileAt: gguf))
    XCTAssertEqual(manifest.files["clip/vocabulary.json"]?.sha256, try SHA256.hex(fileAt: w + "/clip/vocabulary.json"))
    XCTAssertTrue(md.contains("read through tiny-llama-F32.gguf"), "the report does not say how prompts were read")
    // The vocabulary file stores how finalize read every phrase of every prompt set.
    let file = try JSONDecoder().decode(
      ModelBundle.VocabularyFile.self, from: Data(contentsOf: URL(fileURLWithPath: w + "/clip/vocabulary.json")))
    let set = try PromptSet.load("lung", searchDirs: [prompts + "/zero-shot"])
    let untrained = Set(set.allClasses.flatMap(\.phrases)).subtracting(names)
    XCTAssertFalse(untrained.isEmpty)
    XCTAssertTrue(untrained.isSubset(of: file.readings.keys), "finalize stored no reading for some lung phrases")
    let b = try ModelBundle(path: w)
    XCTAssertNil(try b.loadWording(languageModel: gguf, cacheDirectory: nil))
    XCTAssertEqual(b.wording?.vocabulary, names.sorted())
    XCTAssertEqual(file.readingsIdentity, b.wording?.readingsIdentity)
    let policy = ReviewPolicy(thresholds: b.thresholds)
    let read = try ZeroShotClassifier(bundle: b, promptSet: set, cacheDir: nil)
    XCTAssertEqual(read.unreadPhrases, [])
    XCTAssertEqual(read.wordingLabel, "wording read through tiny-llama-F32.gguf")
    let emb = SlideIndex.embedImages([TestSupport.syntheticHE(width: 40, height: 40)], bundle: b)
    XCTAssertFalse(
      policy.tileFlags(try XCTUnwrap(read.predict(emb).first), classifier: read).contains { $0.code == "wording-not-read" })
    // Without that language model, the stored readings read the shipped sets exactly as with it;
    // a phrase they do not hold stays as written, and its set's verdicts are flagged.
    let other = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf/tiny-qwen2-F32.gguf"
    XCTAssertTrue(try XCTUnwrap(b.loadWording(languageModel: other, cacheDirectory: nil)).contains("not the language model"))
    XCTAssertNil(b.wording?.modelPath)
    XCTAssertTrue(try XCTUnwrap(b.loadWording(languageModel: nil, cacheDirectory: nil)).contains("not fetched"))
    let stored = try XCTUnwrap(b.wording)
    XCTAssertNil(stored.modelPath)
    XCTAssertNotEqual(stored.identity, read.wording?.identity, "stored readings alone must not share the cache entry")
    let fromStore = try ZeroShotClassifier(bundle: b, promptSet: set, cacheDir: nil)
    XCTAssertEqual(fromStore.unreadPhrases, [])
    XCTAssertEqual(fromStore.classEmbeddings, read.classEmbeddings)
    XCTAssertEqual(fromStore.wordingLabel, "wording as tiny-llama-F32.gguf read it in finalize")
    let custom = try PromptSet.inline("pulmonary mucinous neoplasm,lung adenocarcinoma")
    let partly = try ZeroShotClassifier(bundle: b, promptSet: custom, cacheDir: nil)
    XCTAssertEqual(partly.unreadPhrases, ["pulmonary mucinous neoplasm"])
    let flag = try XCTUnwrap(
      policy.tileFlags(try XCTUnwrap(partly.predict(emb).first), classifier: partly).first { $0.code == "wording-not-read" })
    XCTAssertTrue(flag.reason.contains("tiny-llama-F32.gguf") && flag.reason.contains("pulmonary mucinous neoplasm"), flag.reason)
    // With no resolver at all, every phrase outside the vocabulary counts as unread.
    b.wording = nil
    let asWritten = try ZeroShotClassifier(bundle: b, promptSet: set, cacheDir: nil)
    XCTAssertEqual(Set(asWritten.unreadPhrases), untrained)
    XCTAssertTrue(
      policy.tileFlags(try XCTUnwrap(asWritten.predict(emb).first), classifier: asWritten).contains {
        $0.code == "wording-not-read"
      })
    try Data("{\"names\": []}".utf8).write(to: URL(fileURLWithPath: w + "/clip/vocabulary.json"))
    XCTAssertThrowsError(try b.loadWording(languageModel: gguf, cacheDirectory: nil)) {
      XCTAssertTrue($0.localizedDescription.contains("vocabulary.json"), $0.localizedDescription)
    }
  }

  /// The out-of-domain model finalize fits measures the image tower's backbone rows; every path
  /// that embeds images gives the same distances (tiles, a slide and its cached index), and a
  /// model of the wrong width is refused in one line naming the file.
  func checkBackboneOutlier(_ b: ModelBundle, weights w: String) throws {
    let o = try XCTUnwrap(b.outlier)
    XCTAssertEqual(o.features, .backbone)
    XCTAssertEqual(o.dim, b.clip.backboneDim)
    let imgs = (0..<5).map { TestSupport.syntheticHE(width: 40 + $0, height: 40) }
    let (emb, dist) = SlideIndex.embedImagesScored(imgs, bundle: b)
    let bb = try XCTUnwrap(b.featureEncoder.embedWithBackbone(imgs).backbone)
    XCTAssertEqual(try XCTUnwrap(dist), o.distances(bb))
    let clf = try ZeroShotClassifier(bundle: b, promptSet: try PromptSet.inline("tumour,stroma"), cacheDir: nil)
    XCTAssertEqual(clf.predict(emb, outlier: dist).compactMap(\.outlier), dist)
    XCTAssertEqual(clf.predict(emb).compactMap(\.outlier), [], "a backbone model cannot measure embeddings")
    let a = AnalyzedSlide.images(imgs, names: imgs.indices.map { "t\($0).png" }, bundle: b)
    XCTAssertEqual(a.embeddings.outlier, dist)
    let sp = TestSupport.tempDir() + "/s.tiff"
    try TestSupport.writeSyntheticSlide(at: sp, width: 1024, height: 768, levels: 2, mpp: 0.5)
    let s = try Slide(path: sp)
    let cache = TestSupport.tempDir("eosin-ood-cache")
    let m = try TissueDetector().detect(s)
    let e1 = try SlideIndex.embed(slide: s, tissue: m, bundle: b, overrideMPP: nil, cacheDir: cache)
    let e2 = try SlideIndex.embed(slide: s, tissue: m, bundle: b, overrideMPP: nil, cacheDir: cache)
    XCTAssertTrue(e2.fromCache)
    XCTAssertEqual(e1.outlier?.count, e1.tiles.count)
    XCTAssertEqual(e1.outlier, e2.outlier)
    // An outlier file of the embedding's width but labelled backbone is refused.
    let bad = TestSupport.tempDir("eosin-bad-outlier")
    try FileManager.default.copyItem(atPath: w, toPath: bad + "/w")
    var man = try WeightsManifest.load(bad + "/w/manifest.json")
    let wrong = try XCTUnwrap(
      OutlierModel(
        dim: b.clip.embedDim, means: [Float](repeating: 0, count: b.clip.embedDim),
        precision: (0..<(b.clip.embedDim * b.clip.embedDim)).map { $0 % (b.clip.embedDim + 1) == 0 ? 1 : 0 },
        features: .backbone))
    try SafeTensorsWriter.write(wrong.tensors, metadata: wrong.metadata, to: bad + "/w/clip/outlier.safetensors")
    man.files["clip/outlier.safetensors"]?.sha256 = try SHA256.hex(fileAt: bad + "/w/clip/outlier.safetensors")
    try man.encoded().write(to: URL(fileURLWithPath: bad + "/w/manifest.json"))
    XCTAssertThrowsError(try ModelBundle(path: bad + "/w")) { e in
      let msg = e.localizedDescription
      XCTAssertTrue(msg.contains("outlier.safetensors") && msg.contains("backbone"), msg)
      XCTAssertFalse(msg.contains("\n"))
    }
  }

  /// Guards the statistics rows at inference: a `backbone+tissue` outlier model is accepted at
  /// its width (backbone + 123), every image's row is its backbone row followed by the
  /// ``TissueFeatures`` of the pixels the tower saw, and scored embedding and slide analysis use
  /// those rows; a model one column short is refused in one line.
  func testBackboneAndTissueOutlierRows() throws {
    let root = TestSupport.tempDir("ood-tissue")
    defer { try? FileManager.default.removeItem(atPath: root) }
    let w = try TestSupport.writeTinyBundle(at: root + "/weights")
    let plain = try ModelBundle(path: w)
    let E = plain.clip.backboneDim + TissueFeatures.count
    XCTAssertEqual(ModelBundle.outlierRowWidth(.backboneAndTissue, plain.clip), E)
    let imgs = (0..<4).map { TestSupport.syntheticHE(width: 40 + 3 * $0, height: 40) }
    let rows = try XCTUnwrap(plain.featureEncoder.embedWithBackbone(imgs, statistics: true).backbone)
    let bb = try XCTUnwrap(plain.featureEncoder.embedWithBackbone(imgs).backbone)
    XCTAssertEqual(rows.count, imgs.count * E)
    let S = plain.clip.imageSize
    for (i, im) in imgs.enumerated() {
      XCTAssertEqual(
        Array(rows[(i * E)..<(i * E + plain.clip.backboneDim)]),
        Array(bb[(i * plain.clip.backboneDim)..<((i + 1) * plain.clip.backboneDim)]))
      let px = plain.preprocess(im.pixels, width: im.width, height: im.height)
      let st = px.withUnsafeBufferPointer {
        TissueFeatures.compute(pixels: $0.baseAddress!, size: S, mean: plain.preprocess.mean, std: plain.preprocess.std)
      }
      XCTAssertEqual(Array(rows[(i * E + plain.clip.backboneDim)..<((i + 1) * E)]), st)
    }
    // A model over those rows: fitted on jittered copies, stored with the weights.
    var train: [Float] = [], labels: [Int] = []
    var rng = SeededRNG(seed: 4)
    for n in 0..<(3 * E) {
      let base = n % imgs.count
      train += rows[(base * E)..<((base + 1) * E)].map { $0 * (1 + 0.05 * (rng.uniform() - 0.5)) + 0.01 * (rng.uniform() - 0.5) }
      labels.append(base % 2)
    }
    let o = try XCTUnwrap(OutlierModel.fit(embeddings: train, labels: labels, dim: E, features: .backboneAndTissue))
    func install(_ m: OutlierModel) throws {
      try SafeTensorsWriter.write(m.tensors, metadata: m.metadata, to: w + "/clip/outlier.safetensors")
      var man = try WeightsManifest.load(w + "/manifest.json")
      man.files["clip/outlier.safetensors"] = .init(
        sha256: try SHA256.hex(fileAt: w + "/clip/outlier.safetensors"),
        bytes: (try FileManager.default.attributesOfItem(atPath: w + "/clip/outlier.safetensors")[.size] as? Int) ?? 0)
      try man.encoded().write(to: URL(fileURLWithPath: w + "/manifest.json"))
    }
    try install(o)
    let b = try ModelBundle(path: w)
    XCTAssertEqual(b.outlier?.features, .backboneAndTissue)
    let (_, dist) = SlideIndex.embedImagesScored(imgs, bundle: b)
    XCTAssertEqual(try XCTUnwrap(dist), o.distances(rows))
    let a = AnalyzedSlide.images(imgs, names: imgs.indices.map { "t\($0).png" }, bundle: b)
    XCTAssertEqual(a.embeddings.outlier, dist)
    // One column short: refused, naming the file and both widths.
    let short = try XCTUnwrap(
      OutlierModel(
        dim: E - 1, means: [Float](repeating: 0, count: E - 1),
        precision: (0..<((E - 1) * (E - 1))).map { $0 % E == 0 ? 1 : 0 }, features: .backboneAndTissue))
    try install(short)
    XCTAssertThrowsError(try ModelBundle(path: w)) { e in
      let msg = e.localizedDescription
      XCTAssertTrue(msg.contains("outlier.safetensors") && msg.contains("backbone+tissue") && msg.contains("\(E)"), msg)
      XCTAssertFalse(msg.contains("\n"))
    }
  }

  /// The chat table `eval chat` and finalize share: every n-th tile of each dataset becomes a
  /// closed-question case judged against the dataset's own set, and the embedded decoder's row
  /// holds every case, the off-topic and the general questions, with its metrics.
  func testChatComparisonAsksEveryDataset() throws {
    let root = TestSupport.tempDir("chat-comparison")
    defer { try? FileManager.default.removeItem(atPath: root) }
    let w = try TestSupport.writeTinyBundle(at: root + "/weights")
    let prompts = TestSupport.projectRoot + "/Prompts"
    let lungDir = try tileSet(root, "tiny-lung", labels: ["lung_aca", "lung_scc", "lung_n"], groups: 12)
    let prostateDir = try tileSet(root, "tiny-prostate", labels: ["stroma_or_benign", "gleason3", "gleason4"], groups: 9)
    let lung = try LabeledTiles.load(lungDir), prostate = try LabeledTiles.load(prostateDir)
    let sets = try ["lung", "prostate"].map { try PromptSet.load($0, searchDirs: [prompts + "/zero-shot"]) }
    let know = LabeledTiles.knowledge(prompts + "/knowledge")
    let cases = try ChatComparison.cases([(lung, sets[0]), (prostate, sets[1])], knowledge: know, perDataset: 3)
    XCTAssertEqual(cases.count, 6)
    XCTAssertEqual(cases.filter { $0.set.name == "prostate" }.count, 3)
    // From the folders (as `eval chat` reads them): only the split's tiles, and the sets chat
    // chooses among (the datasets' own, then tissue, malignancy and organ).
    let (test, chatSets) = try ChatComparison.cases(
      [
        FinalizeDataset(name: "Tiny lung", dir: lungDir, promptSets: ["lung", "malignancy"], terms: "test"),
        FinalizeDataset(name: "Tiny prostate", dir: prostateDir, promptSets: ["prostate"], terms: "test"),
      ], split: .test, stratified: true, knowledge: know, perDataset: 100
    ) { try PromptSet.load($0, searchDirs: [prompts + "/zero-shot"]) }
    let testPaths = Set(
      [(lungDir, lung), (prostateDir, prostate)].flatMap { dir, items in
        let sp = TileManifest.splits(
          dataset: (dir as NSString).lastPathComponent, groups: items.map(\.group), labels: items.map(\.label), stratified: true)
        return items.filter { sp[$0.group] == .test }.map(\.path)
      })
    XCTAssertEqual(Set(test.flatMap(\.paths)), testPaths)
    XCTAssertEqual(chatSets.map(\.name), ["lung", "malignancy", "prostate", "tissue", "organ"])
    let bundle = try ModelBundle(path: w)
    let qs = try ChatComparison.questions(prompts + "/eval/general-questions.json")
    var cmp = ChatComparison(
      bundle: bundle, chat: try ChatModel(directory: bundle.decoderDirectory!, imageDim: bundle.clip.embedDim),
      languageModel: nil, questions: qs,
      makeGrounded: { _, _ in throw TrainingError.data("no language model in this test") }, log: { _ in })
    let lay = Array(try ChatComparison.generalQuestions([prompts + "/eval/paraphrase-questions.json"]).prefix(2))
    cmp.layQuestions = (["paraphrase-questions.json"], lay)
    let (md, metrics) = try cmp.run(cases: cases, sets: sets)
    // The closed questions by prompt set, and the questions worded unlike the notes.
    XCTAssertTrue(md.contains("| lung (3) | ") && md.contains("| prostate (3) | "), md)
    let layRow = try XCTUnwrap(
      md.components(separatedBy: "### Questions worded unlike the notes").last?.split(separator: "\n").first {
        $0.hasPrefix("| embedded decoder")
      })
    XCTAssertTrue(layRow.contains("(2) |"), String(layRow))
    XCTAssertNotNil(metrics["chat_decoder_lay_key_facts"])
    // The yes/no questions after each closed question: a row per model, every wrong one flagged.
    XCTAssertTrue(md.contains("### Yes/no questions"), md)
    let yn = try XCTUnwrap(
      md.components(separatedBy: "### Yes/no questions").last?.split(separator: "\n").first { $0.hasPrefix("| embedded decoder") }
    )
    XCTAssertTrue(yn.contains(" of 6 |"), String(yn))
    XCTAssertTrue(md.contains("on 6 test tiles"), md)
    let row = try XCTUnwrap(md.split(separator: "\n").first { $0.hasPrefix("| embedded decoder") })
    XCTAssertTrue(row.contains("(6)"), String(row))
    XCTAssertTrue(row.contains("(\(qs.questions.count)) |"), String(row))
    XCTAssertTrue(row.hasSuffix("unflagged) |"), String(row))
    XCTAssertNotNil(metrics["chat_decoder_closed_accuracy"])
    // Answers that contradict the classifier are always flagged.
    XCTAssertEqual(metrics["chat_decoder_contradictions_flagged"], JSONValue(any: 1.0))
  }
}
