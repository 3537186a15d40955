import ArgumentParser
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinTraining
import Foundation

/// Options naming the weights and the cache, shared by commands that run models.
struct ModelOptions: ParsableArguments {
  @Option(help: "Weights folder (default: $EOSIN_WEIGHTS or Weights/eosin-small-v1).") var weights: String?
  @Option(help: "Cache folder for text embeddings, slide indexes and calibrations (default: $XDG_CACHE_HOME/eosin).") var cache:
    String?
  @Flag(help: "Do not read or write the cache.") var noCache = false

  var cacheDir: String? {
    if noCache { return nil }
    if let c = cache { return c }
    let env = ProcessInfo.processInfo.environment
    return (env["XDG_CACHE_HOME"] ?? ((env["HOME"] ?? NSTemporaryDirectory()) + "/.cache")) + "/eosin"
  }

  func bundle() throws -> ModelBundle { try ModelBundle(path: weights ?? ModelBundle.defaultPath()) }
}

/// Options choosing the prompt set.
struct PromptOptions: ParsableArguments {
  @Option(
    help: "Prompt set: a JSON file, or a name in Prompts/zero-shot (lung, colorectal, colorectal-coarse, tissue, malignancy).")
  var prompts: String?
  @Option(help: "An inline class list, \"a,b,c\", with default templates.") var classes: String?

  func validate() throws {
    if prompts == nil && classes == nil { throw ValidationError("pass --prompts FILE|NAME or --classes \"a,b,c\"") }
    if prompts != nil && classes != nil { throw ValidationError("pass --prompts or --classes, not both") }
  }

  func load() throws -> PromptSet {
    if let c = classes { return try PromptSet.inline(c) }
    return try PromptSet.load(prompts!, searchDirs: promptDirs("zero-shot"))
  }
}

/// Prompts/<sub> under the working directory and the project holding the executable.
/// The grounded chat model for a GGUF file: the model, and Eosin's notes from
/// `Prompts/knowledge` and `Prompts/notes` (the first copy found of each).
func groundedLM(_ path: String) throws -> GroundedLM {
  let dirs = ["knowledge", "notes"].compactMap { sub in promptDirs(sub).first { FileManager.default.fileExists(atPath: $0) } }
  return GroundedLM(lm: try LanguageModel(path: path), notes: try KnowledgeNotes(directories: dirs))
}

func promptDirs(_ sub: String) -> [String] {
  var dirs = ["Prompts/\(sub)"]
  var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
  while url.path != "/" {
    url.deleteLastPathComponent()
    let c = url.appendingPathComponent("Prompts/\(sub)").path
    if FileManager.default.fileExists(atPath: c) {
      dirs.append(c)
      break
    }
  }
  return dirs
}

/// A one-line progress bar on stderr, only when stderr is a terminal.
struct Progress {
  let label: String
  let enabled = isTerminal(2)
  func update(_ done: Int, _ total: Int) {
    guard enabled, total > 0 else { return }
    let w = 30, f = w * done / total
    FileHandle.standardError.write(
      Data("\r\(label) [\(String(repeating: "#", count: f))\(String(repeating: ".", count: w - f))] \(done)/\(total)".utf8))
    if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
  }
}

/// Builds the classifier with the temperature from a saved calibration, else the manifest.
func makeClassifier(_ bundle: ModelBundle, _ set: PromptSet, _ m: ModelOptions) throws -> (ZeroShotClassifier, String) {
  if let dir = m.cacheDir, let cal = CalibrationFile.load(dir: dir, modelSHA: bundle.clipSHA256, promptSetSHA: set.sha256) {
    return (
      try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: m.cacheDir, temperature: cal.temperature),
      "calibration file (T=\(fmt(Double(cal.temperature), 3)))"
    )
  }
  return (
    try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: m.cacheDir),
    "weights manifest (T=\(fmt(Double(bundle.temperature), 3)))"
  )
}

struct Classify: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Zero-shot classification of images, folders and slides from text prompts, with calibrated probabilities and review flags.")

  @OptionGroup var model: ModelOptions
  @OptionGroup var promptOptions: PromptOptions
  @Argument(help: "Images (jpg, png, tif), folders (searched recursively) and slides.") var inputs: [String]
  @Option(help: "table, csv or json (default: table on a terminal, else csv).") var format: String?
  @Option(help: "Tiles pooled per class for the slide score (top-K mean).") var topK: Int?
  @Option(help: "Write a heatmap PNG per class for each slide into this folder.") var heatmap: String?
  @Option(help: "Write QuPath GeoJSON of the tiles (one file per slide; NAME.geojson next to FILE when several).") var geojson:
    String?
  @Option(help: "The slide's level-0 mpp when the file lacks it.") var mpp: Double?
  @Option(help: "Minimum tissue fraction per tile.") var minTissue: Double = 0.25

  func validate() throws {
    if let f = format, !["table", "csv", "json"].contains(f) { throw ValidationError("--format must be table, csv or json") }
    if let k = topK, k < 1 { throw ValidationError("--top-k must be at least 1") }
  }

  func run() throws {
    let set = try promptOptions.load()
    let items = try InputCollector.collect(inputs)
    let bundle = try model.bundle()
    let (clf, tsource) = try makeClassifier(bundle, set, model)
    let policy = ReviewPolicy(thresholds: bundle.thresholds)
    let fmtOut = format ?? (isTerminal(1) ? "table" : "csv")
    var json: [[String: Any]] = []
    var csv = "type,input,x,y,verdict,probability,flags," + clf.classNames.map { "\"p(\($0))\"" }.joined(separator: ",") + "\n"
    var table = ""
    let images = items.filter { $0.1 == .image }.map { $0.0 }
    let slides = items.filter { $0.1 == .slide }.map { $0.0 }
    // Images, in batches of 32; undecodable files are skipped and counted.
    var skipped = 0
    var i = 0
    let bar = Progress(label: "images")
    while i < images.count {
      let chunk = Array(images[i..<min(images.count, i + 32)])
      var ok: [(String, RGBImage)] = []
      for p in chunk {
        do { ok.append((p, try ImageCodec.read(p))) } catch {
          warn("eosin: warning: skipped \(error.localizedDescription)")
          skipped += 1
        }
      }
      if !ok.isEmpty {
        let preds = clf.predict(SlideIndex.embedImages(ok.map { $0.1 }, bundle: bundle))
        for ((p, _), pr) in zip(ok, preds) {
          let flags = SlidePooling.flags(for: pr, classifier: clf, policy: policy)
          let verdict = clf.classNames[pr.top]
          csv +=
            "image,\(csvField(p)),,,\(csvField(verdict)),\(fmt(Double(pr.probs[pr.top]), 4)),\(csvField(flags.map { $0.code }.joined(separator: ";"))),\(pr.probs.map { fmt(Double($0), 4) }.joined(separator: ","))\n"
          table +=
            "\(p)\n  \(verdict)  \(fmt(Double(pr.probs[pr.top]), 2))"
            + (flags.isEmpty ? "" : "  ⚠ REVIEW: " + flags.map { $0.reason }.joined(separator: "; ")) + "\n"
          json.append([
            "type": "image", "input": p, "verdict": verdict, "probability": pr.probs[pr.top],
            "probabilities": Dictionary(uniqueKeysWithValues: zip(clf.classNames, pr.probs.map { Double($0) })),
            "flags": flags.map { ["code": $0.code, "reason": $0.reason] },
          ])
        }
      }
      i += chunk.count
      bar.update(i, images.count)
    }
    if skipped > 0 { warn("eosin: warning: \(skipped) of \(images.count) images could not be decoded and were skipped") }
    for path in slides {
      let t0 = Probes.now()
      let s = try Slide(path: path)
      let tissue = try TissueDetector().detect(s)
      let t1 = Probes.now()
      if let r = tissue.modalityReason { warn("eosin: warning: \(path): \(r); results are flagged") }
      let sb = Progress(label: (path as NSString).lastPathComponent)
      let emb = try SlideIndex.embed(
        slide: s, tissue: tissue, bundle: bundle, overrideMPP: mpp, minTissue: minTissue, cacheDir: model.cacheDir,
        progress: sb.update)
      let t2 = Probes.now()
      let preds = clf.predict(emb.embeddings)
      let facts = InputFacts(
        mppMissing: s.mppX == nil, notBrightfield: tissue.modalityReason, tissueFraction: tissue.tissueFraction)
      let r = SlidePooling.pool(
        preds, tiles: emb.tiles, extent0: emb.extent0, classifier: clf, k: topK, facts: facts, policy: policy)
      let t3 = Probes.now()
      let total = t3 - t0
      let timing: [String: Double] = [
        "total_s": total, "tissue_s": t1 - t0, "read_s": emb.readSeconds, "encode_s": emb.encodeSeconds, "score_s": t3 - t2,
        "read_share": emb.readSeconds / total,
      ]
      warn(
        String(
          format: "%@: %d tiles %@ in %.2f s (tissue %.2f s, read %.2f s = %.1f%%, encode %.2f s, score %.3f s)",
          (path as NSString).lastPathComponent, emb.tiles.count, emb.fromCache ? "from cache" : "encoded", total, t1 - t0,
          emb.readSeconds, 100 * emb.readSeconds / total, emb.encodeSeconds, t3 - t2))
      let verdict = r.classNames[r.verdict]
      csv +=
        "slide,\(csvField(path)),,,\(csvField(verdict)),\(fmt(Double(r.probs[r.verdict]), 4)),\(csvField(r.flags.map { $0.code }.joined(separator: ";"))),\(r.probs.map { fmt(Double($0), 4) }.joined(separator: ","))\n"
      for (t, p) in zip(emb.tiles, preds) {
        csv +=
          "tile,\(csvField(path)),\(t.x),\(t.y),\(csvField(r.classNames[p.top])),\(fmt(Double(p.probs[p.top]), 4)),,\(p.probs.map { fmt(Double($0), 4) }.joined(separator: ","))\n"
      }
      table +=
        "\(path)  (\(emb.tiles.count) tiles at \(fmt(emb.mpp, 3)) µm/px, \(bundle.tileSize) px; top-\(r.topK) pooling; temperature from \(tsource))\n"
      for (k, n) in r.classNames.enumerated() {
        table +=
          "  \(n.padding(toLength: 40, withPad: " ", startingAt: 0)) \(fmt(Double(r.probs[k]), 3))   tiles \(fmt(r.fractions[k] * 100, 1))%\n"
      }
      table += "  verdict: \(verdict) (\(fmt(Double(r.probs[r.verdict]), 2)))\n"
      table +=
        r.flags.isEmpty
        ? "  confidence \(fmt(Double(r.confidence.probability), 2)) · evidence \(r.evidence[r.verdict].count) tiles\n"
        : "  ⚠ REVIEW: " + r.flags.map { $0.reason }.joined(separator: "; ") + "\n"
      table +=
        "  evidence (level-0 x,y): "
        + r.evidence[r.verdict].prefix(5).map { "(\($0.x),\($0.y)) \(fmt(Double($0.probability), 2))" }.joined(separator: "  ")
        + "\n"
      json.append([
        "type": "slide", "input": path, "verdict": verdict, "probability": r.probs[r.verdict],
        "probabilities": Dictionary(uniqueKeysWithValues: zip(r.classNames, r.probs.map { Double($0) })),
        "fractions": Dictionary(uniqueKeysWithValues: zip(r.classNames, r.fractions)),
        "evidence": Dictionary(
          uniqueKeysWithValues: zip(
            r.classNames,
            r.evidence.map { $0.map { ["x": $0.x, "y": $0.y, "size": $0.size, "probability": Double($0.probability)] } })),
        "flags": r.flags.map { ["code": $0.code, "reason": $0.reason] }, "tiles": emb.tiles.count, "mpp": emb.mpp,
        "tile_size": emb.tileSize,
        "top_k": r.topK, "cached": emb.fromCache, "timing": timing,
        "confidence": [
          "probability": r.confidence.probability, "margin": r.confidence.margin, "prompt_spread": r.confidence.promptSpread,
          "domain": r.confidence.domain, "tissue_fraction": tissue.tissueFraction,
        ],
      ])
      let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
      if let dir = heatmap {
        let th = try s.thumbnail(maxSize: 1024)
        for (k, n) in r.classNames.enumerated() {
          let img = Heatmap.render(
            thumbnail: th.image, downsampleX: th.downsampleX, downsampleY: th.downsampleY,
            tiles: emb.tiles.map { ($0.x, $0.y, Int(emb.extent0.rounded())) }, values: preds.map { $0.probs[k] })
          let safe = n.replacingOccurrences(of: "/", with: "-").replacingOccurrences(of: " ", with: "_")
          try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
          try ImageCodec.write(img, to: "\(dir)/\(base)-\(safe).png")
        }
      }
      if let g = geojson {
        let out =
          slides.count == 1
          ? g : ((g as NSString).deletingLastPathComponent as NSString).appendingPathComponent("\(base).geojson")
        try writeAtomically(
          try JSONSerialization.data(
            withJSONObject: GeoJSON.tiles(r, tiles: emb.tiles, extent0: emb.extent0), options: [.sortedKeys]), to: out)
      }
    }
    switch fmtOut {
    case "json":
      let d = try JSONSerialization.data(
        withJSONObject: ["prompt_set": set.name, "classes": clf.classNames, "results": json],
        options: [.prettyPrinted, .sortedKeys])
      print(String(decoding: d, as: UTF8.self))
    case "csv": print(csv, terminator: "")
    default: print(table, terminator: "")
    }
  }
}

/// A CSV field, quoted when it holds a comma, quote or newline.
func csvField(_ s: String) -> String {
  s.contains(",") || s.contains("\"") || s.contains("\n") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
}

/// Parses "LABEL=CLASS,LABEL=CLASS".
func parseLabelMap(_ s: String?) -> [String: String] {
  var m: [String: String] = [:]
  for part in (s ?? "").split(separator: ",") {
    let kv = part.split(separator: "=", maxSplits: 1)
    if kv.count == 2 { m[String(kv[0])] = String(kv[1]) }
  }
  return m
}

/// Labelled tiles embedded and scored: the shared core of calibrate and eval.
func scoreLabelled(_ items: [LabeledTiles.Item], set: PromptSet, clf: ZeroShotClassifier, labelMap: String?) throws -> (
  logits: [Float], truth: [Int], preds: [TilePrediction], skipped: Int
) {
  let map = try LabeledTiles.mapLabels(
    Set(items.map { $0.label }), to: set,
    knowledge: LabeledTiles.knowledge(
      promptDirs("knowledge").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/knowledge"),
    overrides: parseLabelMap(labelMap))
  var logits: [Float] = [], truth: [Int] = [], preds: [TilePrediction] = []
  var skipped = 0
  let bar = Progress(label: "tiles")
  var i = 0
  while i < items.count {
    let chunk = Array(items[i..<min(items.count, i + 64)])
    var imgs: [RGBImage] = [], labs: [Int] = []
    for it in chunk {
      do {
        imgs.append(try ImageCodec.read(it.path))
        labs.append(map[it.label]!)
      } catch {
        warn("eosin: warning: skipped \(error.localizedDescription)")
        skipped += 1
      }
    }
    if !imgs.isEmpty {
      let e = SlideIndex.embedImages(imgs, bundle: clf.bundle)
      logits += clf.logits(e)
      preds += clf.predict(e)
      truth += labs
    }
    i += chunk.count
    bar.update(i, items.count)
  }
  guard !truth.isEmpty else { throw CLIError("no tiles could be read") }
  return (logits, truth, preds, skipped)
}

struct Calibrate: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Fit a calibration temperature on your labelled tiles; later runs with the same model and prompt set use it.")

  @OptionGroup var model: ModelOptions
  @OptionGroup var promptOptions: PromptOptions
  @Option(help: "Folder of labelled tiles: class subfolders or manifest.csv.") var data: String
  @Option(help: "Map dataset labels to classes: \"label=class,...\".") var labelMap: String?

  func run() throws {
    let set = try promptOptions.load()
    let bundle = try model.bundle()
    guard let dir = model.cacheDir else { throw CLIError("calibration needs a cache folder; drop --no-cache") }
    let clf = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: dir, temperature: 1)
    let items = try LabeledTiles.load(data)
    let (lg, truth, _, skipped) = try scoreLabelled(items, set: set, clf: clf, labelMap: labelMap)
    let K = clf.classCount
    let T = Metrics.fitTemperature(lg, truth: truth, classes: K)
    func eceAt(_ t: Float) -> Double {
      let p = Metrics.softmax(lg, classes: K, temperature: t)
      var conf: [Float] = [], ok: [Bool] = []
      for n in 0..<truth.count {
        let row = Array(p[(n * K)..<((n + 1) * K)])
        let top = row.indices.max { row[$0] < row[$1] }!
        conf.append(row[top])
        ok.append(top == truth[n])
      }
      return Metrics.ece(confidence: conf, correct: ok)
    }
    let cal = CalibrationFile(
      modelSHA256: bundle.clipSHA256, promptSetSHA256: set.sha256, promptSet: set.name, temperature: T, tiles: truth.count,
      nllBefore: Metrics.nll(lg, truth: truth, classes: K, temperature: bundle.temperature),
      nllAfter: Metrics.nll(lg, truth: truth, classes: K, temperature: T),
      eceBefore: eceAt(bundle.temperature), eceAfter: eceAt(T))
    let path = CalibrationFile.path(dir: dir, modelSHA: bundle.clipSHA256, promptSetSHA: set.sha256)
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeAtomically(try e.encode(cal), to: path)
    print("temperature \(fmt(Double(T), 4)) fitted on \(truth.count) tiles (\(skipped) skipped)")
    print("NLL \(fmt(cal.nllBefore, 4)) -> \(fmt(cal.nllAfter, 4)); ECE \(fmt(cal.eceBefore, 4)) -> \(fmt(cal.eceAfter, 4))")
    print("wrote \(path)")
  }
}

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Evaluate models.", subcommands: [EvalZeroShot.self])
}

struct EvalZeroShot: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "zero-shot",
    abstract: "Balanced accuracy, per-class recall, confusion, ECE and accuracy against coverage on labelled tiles.")

  @OptionGroup var model: ModelOptions
  @OptionGroup var promptOptions: PromptOptions
  @Option(help: "Folder of labelled tiles: class subfolders or manifest.csv.") var data: String
  @Option(help: "Which split of a manifest with groups to use: train, val, test or all (Eosin's group split).") var split = "all"
  @Option(help: "Map dataset labels to classes: \"label=class,...\".") var labelMap: String?
  @Option(help: "Use this temperature instead of the manifest's.") var temperature: Float?
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    let set = try promptOptions.load()
    let bundle = try model.bundle()
    let clf = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: model.cacheDir, temperature: temperature)
    var items = try LabeledTiles.load(data)
    let dsName = (data as NSString).lastPathComponent
    if split != "all" {
      guard let sp = Split(rawValue: split) else { throw ValidationError("--split must be train, val, test or all") }
      items = items.filter { TileManifest.split(dataset: dsName, group: $0.group) == sp }
    }
    let (lg, truth, preds, skipped) = try scoreLabelled(items, set: set, clf: clf, labelMap: labelMap)
    let sc = ZeroShotScores(
      logits: lg, predictions: preds, truth: truth, classifier: clf, policy: ReviewPolicy(thresholds: bundle.thresholds))
    if json {
      var o = sc.json
      o["prompt_set"] = set.name
      o["split"] = split
      o["skipped"] = skipped
      o["temperature"] = clf.temperature
      o["recall"] = Dictionary(uniqueKeysWithValues: zip(clf.classNames, sc.recall.map { $0 ?? -1 }))
      print(
        String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
      return
    }
    print(
      "prompt set   \(set.name) (\(set.templates.count) templates), split \(split), \(truth.count) tiles\(skipped > 0 ? ", \(skipped) skipped" : "")"
    )
    print("balanced accuracy  \(fmt(sc.balancedAccuracy, 4))   accuracy \(fmt(sc.accuracy, 4))")
    for (k, r) in sc.recall.enumerated() {
      if let r = r { print("  recall  \(clf.classNames[k].padding(toLength: 40, withPad: " ", startingAt: 0)) \(fmt(r, 3))") }
    }
    print("confusion (rows: truth, columns: predicted)")
    for (k, row) in sc.confusion.enumerated() where row.reduce(0, +) > 0 {
      print(
        "  \(clf.classNames[k].prefix(28).padding(toLength: 28, withPad: " ", startingAt: 0)) "
          + row.map { String($0).padding(toLength: 6, withPad: " ", startingAt: 0) }.joined())
    }
    print("ECE  \(fmt(sc.eceUncalibrated, 4)) at T=1 -> \(fmt(sc.ece, 4)) at T=\(fmt(Double(clf.temperature), 3))")
    print("unflagged    \(fmt(100 * sc.unflaggedShare, 1))% of tiles, accuracy \(fmt(sc.unflaggedAccuracy, 4))")
    for s in sc.selective {
      print("  confidence >= \(fmt(Double(s.threshold), 1)): coverage \(fmt(s.coverage, 3)), accuracy \(fmt(s.accuracy, 4))")
    }
  }
}
