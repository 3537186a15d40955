import ArgumentParser
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation

/// Options naming the weights and the cache, shared by commands that run models.
struct ModelOptions: ParsableArguments {
  @Option(help: "Weights folder (default: $EOSIN_WEIGHTS or Weights/eosin-small-v2).") var weights: String?
  @Option(help: "Cache folder for text embeddings, slide indexes and calibrations (default: $XDG_CACHE_HOME/eosin).") var cache:
    String?
  @Flag(help: "Do not read or write the cache.") var noCache = false
  @Option(
    help:
      "Image-encoder precision: fp32 (default) or bf16 (AVX512-BF16; about 2x faster here, embeddings within cosine 0.999 of fp32)."
  )
  var precision: String = "fp32"
  @Option(
    help:
      "How zero-shot prompt phrases are read: auto (as the weights' manifest says), as-written, or lm (a phrase the text tower was not trained on borrows the text embeddings of the trained names nearest to it in the language model's hidden states)."
  )
  var wording: Wording = .auto
  @Option(help: "Language model that reads prompt wording (GGUF; default: $EOSIN_LM or the fetched SmolLM2).") var wordingLM:
    String?

  var cacheDir: String? {
    if noCache { return nil }
    if let c = cache { return c }
    return EosinCache.root
  }

  func validate() throws {
    if Precision(rawValue: precision) == nil { throw ValidationError("--precision must be fp32 or bf16") }
  }

  /// The weights, with their prompt wording read as `--wording` says; in `auto`, a manifest
  /// that asks for the language model it cannot have gets one note on stderr.
  func bundle() throws -> ModelBundle {
    let b = try ModelBundle(path: weights ?? ModelBundle.defaultPath(), precision: Precision(rawValue: precision) ?? .fp32)
    let lm = LanguageModel.Default.resolve(wordingLM)
    let cache = cacheDir.map { $0 + "/wording" }
    switch wording {
    case .asWritten: break
    case .auto:
      // Without the language model, the readings finalize stored still read the shipped prompt
      // sets; a phrase outside them is read as written and its set's verdicts are flagged.
      if b.manifest.wording != nil, let why = try b.loadWording(languageModel: lm, cacheDirectory: cache), b.wording == nil {
        warn(
          "eosin: note: zero-shot prompts are read as written: \(why); verdicts of prompt sets with phrases the model was not trained on are flagged for review"
        )
      }
    case .lm: try readWordingThroughLM(b, lm: lm, cacheDirectory: cache)
    }
    return b
  }
}

/// Reads the prompt wording of `b` through the language model at `lm`, as `--wording lm` does:
/// with the vocabulary (and stored readings) its manifest records, else, for weights that
/// record none yet, with the names its text tower was trained on.
/// - Throws: ``CLIError`` when there is no language model or it is not the manifest's.
func readWordingThroughLM(_ b: ModelBundle, lm: String?, cacheDirectory cache: String?) throws {
  if b.manifest.wording != nil {
    if let why = try b.loadWording(languageModel: lm, cacheDirectory: cache) { throw CLIError("--wording lm: \(why)") }
  } else {
    guard let path = lm else {
      throw CLIError("--wording lm needs a language model: pass --wording-lm FILE.gguf, or fetch SmolLM2 (`make lm`)")
    }
    b.wording = try WordingResolver(languageModel: path, vocabulary: try trainedVocabulary(b.directory), cacheDirectory: cache)
  }
}

/// The names the text tower of the weights in `weights` was trained on: the `caption_names` its
/// training recorded (`clip/training.json`), else (weights trained before they were recorded)
/// the knowledge notes' class names and synonyms, less every synonym its training held out and
/// every synonym of the prompt sets.
func trainedVocabulary(_ weights: String) throws -> [String] {
  var held: Set<String> = []
  let record = weights + "/clip/training.json"
  if let d = FileManager.default.contents(atPath: record) {
    guard let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else {
      throw CLIError("\(record): not a JSON training record")
    }
    if let names = o["caption_names"] as? [String], !names.isEmpty { return names }
    for s in (o["held_out_synonyms"] as? [String]) ?? [] { held.insert(s.lowercased()) }
  }
  if let dir = promptDirs("zero-shot").first(where: { FileManager.default.fileExists(atPath: $0) }) {
    held.formUnion(promptSynonyms(dir))
  }
  guard let dir = promptDirs("knowledge").first(where: { FileManager.default.fileExists(atPath: $0) }) else {
    throw CLIError("Eosin's knowledge notes (Prompts/knowledge) were not found")
  }
  return try WordingResolver.trainedNames(knowledgeDirectory: dir, heldOut: held)
}

/// Options choosing the prompt set.
struct PromptOptions: ParsableArguments {
  @Option(
    help:
      "Prompt set: a JSON file, or a name in Prompts/zero-shot (lung, colorectal, colorectal-coarse, prostate, endometrium, endometrium-subtypes, organ, tissue, malignancy)."
  )
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

/// How zero-shot prompt wording reaches the text tower: as the weights' manifest says, as
/// written, or read through the language model (``WordingResolver``).
enum Wording: String, ExpressibleByArgument, CaseIterable {
  case auto
  case asWritten = "as-written"
  case lm
}

/// The grounded chat model for a GGUF file: the model, Eosin's notes from `Prompts/knowledge`
/// and `Prompts/notes` (the first copy found of each), embedded by the model for retrieval with
/// `retrieval` hybrid, and with `bundle` its slide-token projector when it was trained for this
/// file. The second value says why slide tokens are off.
func groundedLM(_ path: String, bundle: ModelBundle? = nil, notes: KnowledgeNotes? = nil, retrieval: Retrieval = .bm25) throws
  -> (GroundedLM, String?)
{
  try groundedLM(try LanguageModel(path: path), bundle: bundle, notes: notes, retrieval: retrieval)
}

/// The same, for a language model already loaded.
func groundedLM(_ lm: LanguageModel, bundle: ModelBundle? = nil, notes: KnowledgeNotes? = nil, retrieval: Retrieval = .bm25)
  throws -> (GroundedLM, String?)
{
  let g = try GroundedLM(lm: lm, notes: try notes ?? chatNotes(), denseRetrieval: retrieval == .hybrid)
  guard let b = bundle else { return (g, "no weights given") }
  return (g, try g.loadProjector(from: b))
}

/// How chat ranks Eosin's notes for a question: BM25 alone, or BM25 fused with the language
/// model's hidden states (``NoteEmbeddings``). BM25 is the default: on the question sets in
/// Prompts/eval the fusion found the key facts no more often and cost about 60 ms a question.
enum Retrieval: String, ExpressibleByArgument, CaseIterable {
  case bm25, hybrid
}

/// The notes chat retrieves from: Eosin's own (`Prompts/knowledge`, `Prompts/notes`, the first
/// copy found of each), then the reference text `eosin notes import` put in the cache.
func chatNotes() throws -> KnowledgeNotes {
  let dirs = ["knowledge", "notes"].compactMap { sub in promptDirs(sub).first { FileManager.default.fileExists(atPath: $0) } }
  return try KnowledgeNotes(directories: dirs, fallback: [KnowledgeNotes.importedDirectory])
}

/// Prompts/<sub> under the working directory and the project holding the executable.
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

/// Progress on stderr: a bar redrawn in place on a terminal; otherwise nothing per batch, and
/// one line per finished input from ``BatchLog``.
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

/// The batch rule of `classify` and `report`: every input is tried; each failure is one line on
/// stderr naming the input; each input's outcome is a progress line `[k/n] NAME: ...`; a summary
/// comes last; the exit status is 2 when any input failed.
final class BatchLog {
  let total: Int
  let verb: String
  var done = 0, failed = 0, skipped = 0
  let started = Probes.now()
  init(total: Int, verb: String) {
    self.total = total
    self.verb = verb
    // Ctrl-C: every finished input is already written; say so and exit 130.
    signal(SIGINT) { _ in
      let m = "\neosin: interrupted; the inputs finished so far are written (exit 130)\n"
      m.withCString { _ = write(2, $0, strlen($0)) }
      _exit(130)
    }
  }

  /// The error's own line when it names the input, else the input and the error.
  static func line(_ path: String, _ error: Error) -> String {
    let d = error.localizedDescription
    return d.contains(path) || d.contains((path as NSString).lastPathComponent) ? d : "\(path): \(d)"
  }

  /// One input done: `[k/n] PATH: note`. A run of one input prints the note only when asked
  /// (a slide's timing), without the counter.
  func succeeded(_ path: String, _ note: String, alone: Bool = false) {
    done += 1
    if total > 1 {
      warn("[\(done + failed + skipped)/\(total)] \(path): \(note)")
    } else if alone {
      warn("\((path as NSString).lastPathComponent): \(note)")
    }
  }

  func upToDate(_ path: String) {
    skipped += 1
    if total > 1 { warn("[\(done + failed + skipped)/\(total)] \(path): up to date, skipped") }
  }

  func failure(_ path: String, _ error: Error) {
    failed += 1
    warn("eosin: error: " + Self.line(path, error))
  }

  /// The summary line.
  var summary: String {
    String(
      format: "%@ %d of %d inputs%@%@ in %.1f s", verb, done, total, skipped > 0 ? ", \(skipped) up to date" : "",
      failed > 0 ? ", \(failed) FAILED" : "", Probes.now() - started)
  }

  /// Prints the summary (for more than one input) and ends the command with status 2 when
  /// anything failed.
  func finish() throws {
    if total > 1 { warn(summary) }
    if failed > 0 { throw ExitCode(2) }
  }
}

struct Classify: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Zero-shot classification of images, folders and slides from text prompts, with calibrated probabilities and review flags.",
    discussion:
      "Every input is tried; a failing input gets one line on stderr, the others are classified, and the exit status is 2 when any failed. Results are written as each input finishes (CSV and table)."
  )

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
    if let m = mpp, !(m > 0 && m < 1000) { throw ValidationError("--mpp must be a positive number of microns per pixel") }
  }

  func run() throws {
    let set = try promptOptions.load()
    let bundle = try model.bundle()
    // The temperature `eosin calibrate` fitted for this model and set, else the manifest's.
    let clf = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: model.cacheDir)
    let policy = ReviewPolicy(thresholds: bundle.thresholds)
    let organs = try OrganCheck(
      organSets: PromptSet.loadAll(searchDirs: promptDirs("zero-shot")), bundle: bundle, cacheDir: model.cacheDir)
    let fmtOut = format ?? (isTerminal(1) ? "table" : "csv")
    let tsource =
      "T=\(fmt(Double(clf.temperature), 3)) from \(clf.temperatureSource.label)"
      + (clf.wordingLabel.map { ", \($0)" } ?? "")
    // Inputs: each argument expanded on its own, so one missing path fails alone.
    var items: [(String, InputCollector.Kind)] = []
    var missing: [(String, Error)] = []
    for i in inputs {
      do { items += try InputCollector.collect([i]) } catch { missing.append((i, error)) }
    }
    let log = BatchLog(total: items.count + missing.count, verb: "classified")
    for (p, e) in missing { log.failure(p, e) }
    var json: [[String: Any]] = []
    // The header comes with the first result, so a run where every input fails writes nothing.
    var headerDone = false
    func emit(_ s: String) {
      guard fmtOut != "json" else { return }
      if !headerDone {
        headerDone = true
        print(
          fmtOut == "csv"
            ? ClassificationExport.csvHeader(clf.classNames) : "prompt set \(set.name), probabilities at \(tsource)\n",
          terminator: "")
      }
      print(s, terminator: "")
      fflush(stdout)
    }
    let images = items.filter { $0.1 == .image }.map { $0.0 }
    let slides = items.filter { $0.1 == .slide }.map { $0.0 }
    // Images, in batches of 32; each undecodable file fails on its own.
    var i = 0
    while i < images.count {
      let chunk = Array(images[i..<min(images.count, i + 32)])
      var ok: [(String, RGBImage)] = []
      for p in chunk {
        do { ok.append((p, try ImageCodec.read(p))) } catch { log.failure(p, error) }
      }
      if !ok.isEmpty {
        let (emb, dist) = SlideIndex.embedImagesScored(ok.map { $0.1 }, bundle: bundle)
        let preds = clf.predict(emb, outlier: dist)
        let organ = organs?.organs(emb)
        for (n, ((p, _), pr)) in zip(ok, preds).enumerated() {
          let verdict = clf.classNames[pr.top]
          var flags = policy.tileFlags(pr, classifier: clf)
          if let o = organ, let f = organs?.flag(set: set, verdict: verdict, found: o[n]) { flags.append(f) }
          emit(
            fmtOut == "csv"
              ? ClassificationExport.csvRow(
                kind: "image", input: p, verdict: verdict, probs: pr.probs, top: pr.top, flags: flags,
                temperature: clf.temperature)
              : "\(p)\n  \(verdict)  \(fmt(Double(pr.probs[pr.top]), 2))"
                + (flags.isEmpty ? "" : "  ⚠ REVIEW: " + flags.map { $0.reason }.joined(separator: "; ")) + "\n")
          json.append(ClassificationExport.imageJSON(path: p, prediction: pr, flags: flags, classNames: clf.classNames))
          log.succeeded(p, "\(verdict) \(fmt(Double(pr.probs[pr.top]), 2))\(flags.isEmpty ? "" : ", flagged")")
        }
      }
      i += chunk.count
    }
    for path in slides {
      do {
        let t0 = Probes.now()
        let sb = Progress(label: (path as NSString).lastPathComponent)
        let a = try AnalyzedSlide.analyze(
          [path], bundle: bundle, overrideMPP: mpp, minTissue: minTissue, cacheDir: model.cacheDir, progress: sb.update)
        if let r = a.facts.notBrightfield { warn("eosin: warning: \(path): \(r); results are flagged") }
        let t2 = Probes.now()
        let r = a.classify(clf, policy: policy, topK: topK, organs: organs)
        let t3 = Probes.now()
        let emb = a.embeddings
        let total = t3 - t0
        let timing: [String: Double] = [
          "total_s": total, "tissue_s": a.tissueSeconds, "read_s": emb.readSeconds, "encode_s": emb.encodeSeconds,
          "score_s": t3 - t2, "read_share": emb.readSeconds / total,
        ]
        let verdict = r.classNames[r.verdict]
        var table =
          "\(path)  (\(emb.tiles.count) tiles at \(fmt(emb.mpp, 3)) µm/px, \(bundle.tileSize) px; top-\(r.topK) pooling)\n"
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
          "  tiles flagged: \(r.tileFlags.filter { !$0.isEmpty }.count) of \(emb.tiles.count)\n  evidence (level-0 x,y): "
          + r.evidence[r.verdict].prefix(5).map { "(\($0.x),\($0.y)) \(fmt(Double($0.probability), 2))" }.joined(separator: "  ")
          + "\n"
        emit(fmtOut == "csv" ? ClassificationExport.csvRows(r, input: a) : table)
        json.append(ClassificationExport.slideJSON(r, input: a, timing: timing))
        let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        if let dir = heatmap {
          for (k, n) in r.classNames.enumerated() {
            guard let img = try a.heatmap(r, classIndex: k) else { continue }
            let safe = n.replacingOccurrences(of: "/", with: "-").replacingOccurrences(of: " ", with: "_")
            try writeAtomically(Data(try ImageCodec.encodePNG(img)), to: "\(dir)/\(base)-\(safe).png")
          }
        }
        if let g = geojson {
          let out =
            slides.count == 1
            ? g : ((g as NSString).deletingLastPathComponent as NSString).appendingPathComponent("\(base).geojson")
          try writeAtomically(
            try JSONSerialization.data(
              withJSONObject: GeoJSON.tiles(r, tiles: emb.tiles, extent0: emb.extent0),
              options: [.sortedKeys, .withoutEscapingSlashes]),
            to: out)
        }
        log.succeeded(
          path,
          String(
            format: "%@ %.2f%@; %d tiles %@ in %.2f s (tissue %.2f s, read %.2f s = %.1f%%, encode %.2f s, score %.3f s)",
            verdict, r.probs[r.verdict], r.flags.isEmpty ? "" : ", flagged", emb.tiles.count,
            emb.fromCache ? "from cache" : "encoded", total, a.tissueSeconds, emb.readSeconds, 100 * emb.readSeconds / total,
            emb.encodeSeconds, t3 - t2), alone: true)
      } catch {
        log.failure(path, error)
      }
    }
    if fmtOut == "json" {
      let d = try JSONSerialization.data(
        withJSONObject: [
          "prompt_set": set.name, "classes": clf.classNames, "temperature": Double(clf.temperature),
          "temperature_source": clf.temperatureSource.label, "results": json, "failed": log.failed,
        ] as [String: Any],
        options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
      print(String(decoding: d, as: UTF8.self))
    }
    try log.finish()
  }
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

/// Labelled tiles scored by `clf`, their labels mapped to its classes (knowledge synonyms, then
/// `--label-map` overrides); warnings and a progress bar on stderr.
func scoreLabelled(
  _ items: [LabeledTiles.Item], set: PromptSet, clf: ZeroShotClassifier, labelMap: String?,
  transform: @escaping (RGBImage) -> RGBImage = { $0 }
) throws -> ScoredTiles {
  let map = try LabeledTiles.mapLabels(
    Set(items.map { $0.label }), to: set,
    knowledge: LabeledTiles.knowledge(
      promptDirs("knowledge").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/knowledge"),
    overrides: parseLabelMap(labelMap))
  let bar = Progress(label: "tiles")
  return try ScoredTiles(
    items, classifier: clf, truth: map, transform: transform, progress: bar.update, warn: { warn("eosin: warning: " + $0) })
}

struct Calibrate: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Fit a calibration temperature on your labelled tiles; later runs with the same model, prompt set and wording use it.")

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
    let scored = try scoreLabelled(items, set: set, clf: clf, labelMap: labelMap)
    let (lg, truth, skipped) = (scored.logits, scored.truth, scored.unreadable)
    let K = clf.classCount
    let T = Metrics.fitTemperature(lg, truth: truth, classes: K)
    func eceAt(_ t: Float) -> Double { Metrics.ece(logits: lg, truth: truth, classes: K, temperature: t) }
    var cal = CalibrationFile(
      modelSHA256: bundle.clipSHA256, promptSetSHA256: set.sha256, promptSet: set.name, temperature: T, tiles: truth.count,
      nllBefore: Metrics.nll(lg, truth: truth, classes: K, temperature: bundle.temperature),
      nllAfter: Metrics.nll(lg, truth: truth, classes: K, temperature: T),
      eceBefore: eceAt(bundle.temperature), eceAfter: eceAt(T))
    // The temperature holds for this reading of the prompts only (as written, or through the
    // language model), and is keyed by it.
    cal.wording = clf.wording?.identity
    let path = CalibrationFile.path(dir: dir, modelSHA: bundle.clipSHA256, promptSetSHA: set.sha256, wording: cal.wording)
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    try writeAtomically(try e.encode(cal), to: path)
    print("temperature \(fmt(Double(T), 4)) fitted on \(truth.count) tiles (\(skipped) skipped)")
    print("NLL \(fmt(cal.nllBefore, 4)) -> \(fmt(cal.nllAfter, 4)); ECE \(fmt(cal.eceBefore, 4)) -> \(fmt(cal.eceAfter, 4))")
    print("wrote \(path)")
  }
}

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Evaluate models.", subcommands: [EvalZeroShot.self, EvalLeaveOut.self, EvalChat.self])
}

struct EvalZeroShot: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "zero-shot",
    abstract: "Balanced accuracy, per-class recall, confusion, ECE and accuracy against coverage on labelled tiles.")

  @OptionGroup var model: ModelOptions
  @OptionGroup var promptOptions: PromptOptions
  @Option(help: "Folder of labelled tiles: class subfolders or manifest.csv.") var data: String
  @Option(
    help:
      "Which split of a manifest with groups to use: train, val, test or all (Eosin's group split, by the rule the weights were trained with: the manifest's split_rule)."
  ) var split = "all"
  @Option(help: "Map dataset labels to classes: \"label=class,...\".") var labelMap: String?
  @Option(help: "Use this temperature instead of the manifest's.") var temperature: Float?
  @Option(help: "Apply a fixed shift to every tile first: none, stain, blur or jpeg (robustness).") var shift = "none"
  @Flag(help: "Print JSON.") var json = false

  func run() throws {
    let set = try promptOptions.load()
    let bundle = try model.bundle()
    // --temperature, else a fitted calibration for this model and set, else the manifest's.
    let clf = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: model.cacheDir, temperature: temperature)
    var items = try LabeledTiles.load(data)
    let dsName = (data as NSString).lastPathComponent
    if split != "all" {
      guard let sp = Split(rawValue: split) else { throw ValidationError("--split must be train, val, test or all") }
      // The split rule the weights were trained with: another rule's test split holds training tiles.
      let splits = TileManifest.splits(
        dataset: dsName, groups: items.map(\.group), labels: items.map(\.label),
        stratified: bundle.manifest.splitsStratifiedByLabel)
      items = items.filter { splits[$0.group] == sp }
    }
    guard let sh = ImageShift(rawValue: shift) else { throw ValidationError("--shift must be none, stain, blur or jpeg") }
    let scored = try scoreLabelled(items, set: set, clf: clf, labelMap: labelMap, transform: sh.apply)
    let (lg, truth, preds, skipped, emb) = (
      scored.logits, scored.truth, scored.predictions, scored.unreadable, scored.embeddings
    )
    let organs = try OrganCheck(
      organSets: PromptSet.loadAll(searchDirs: promptDirs("zero-shot")), bundle: bundle, cacheDir: model.cacheDir)
    let sc = ZeroShotScores(
      logits: lg, predictions: preds, truth: truth, classifier: clf, policy: ReviewPolicy(thresholds: bundle.thresholds),
      organs: organs.map { ($0, emb) })
    if json {
      var o = sc.json
      o["prompt_set"] = set.name
      o["split"] = split
      o["shift"] = shift
      o["skipped"] = skipped
      o["temperature"] = clf.temperature
      o["temperature_source"] = clf.temperatureSource.label
      o["wording"] = clf.wording == nil ? "as-written" : clf.wording?.modelPath == nil ? "lm-stored" : "lm"
      o["recall"] = Dictionary(uniqueKeysWithValues: zip(clf.classNames, sc.recall.map { $0 ?? -1 }))
      print(
        String(
          decoding: try JSONSerialization.data(
            withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
      return
    }
    print(
      "prompt set   \(set.name) (\(set.templates.count) templates), split \(split), \(truth.count) tiles\(skipped > 0 ? ", \(skipped) skipped" : "")\(sh == .none ? "" : ", shift: \(sh.summary)")\(clf.wordingLabel.map { ", \($0)" } ?? "")"
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
    print(
      "ECE  \(fmt(sc.eceUncalibrated, 4)) at T=1 -> \(fmt(sc.ece, 4)) at T=\(fmt(Double(clf.temperature), 3)) (\(clf.temperatureSource.label))"
    )
    print(
      sc.unflaggedShare > 0
        ? "unflagged    \(fmt(100 * sc.unflaggedShare, 1))% of tiles, accuracy \(fmt(sc.unflaggedAccuracy, 4))"
        : "unflagged    none: every tile is flagged for review")
    for s in sc.selective {
      print("  confidence >= \(fmt(Double(s.threshold), 1)): coverage \(fmt(s.coverage, 3)), accuracy \(fmt(s.accuracy, 4))")
    }
  }
}

/// `eosin eval lodo`: zero-shot on a dataset the weights never saw (left out of training, with
/// nothing fitted on it), under the full review policy; writes the result for EVALUATION.md.
struct EvalLeaveOut: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lodo",
    abstract:
      "Leave-one-dataset-out: zero-shot accuracy and review flags on a dataset left out of training (make weights-lodo).")

  @OptionGroup var model: ModelOptions
  @Option(help: "The left-out tile folder (every split: nothing was fitted on it).") var data: String
  @Option(parsing: .upToNextOption, help: "Prompt sets to score it with (default: the dataset's own, as finalize knows it).")
  var prompts: [String] = []
  @Option(help: "The command that trained the weights, for the record.") var trainedBy = ""
  @Option(help: "Where to write the result (JSON with a markdown section).") var out = "Weights/records/lodo.json"
  @Option(help: "An evaluation report whose \"Leave one dataset out\" section is replaced with this result (none: leave it).")
  var report = "EVALUATION.md"

  func run() throws {
    let bundle = try model.bundle()
    let items = try LabeledTiles.load(data)
    let organs = try OrganCheck(
      organSets: PromptSet.loadAll(searchDirs: promptDirs("zero-shot")), bundle: bundle, cacheDir: model.cacheDir)
    let folder = (data as NSString).lastPathComponent
    let sets = prompts.isEmpty ? (knownDatasets[folder]?.sets ?? []) : prompts
    guard !sets.isEmpty else { throw CLIError("\(data): no prompt set known for '\(folder)'; pass --prompts SET...") }
    var rows: [LeaveOneOut.Row] = []
    for name in sets {
      let set = try PromptSet.load(name, searchDirs: promptDirs("zero-shot"))
      let clf = try ZeroShotClassifier(bundle: bundle, promptSet: set, cacheDir: model.cacheDir)
      rows.append(
        LeaveOneOut.row(
          try scoreLabelled(items, set: set, clf: clf, labelMap: nil), classifier: clf, bundle: bundle, organs: organs))
    }
    let md = LeaveOneOut.markdown(
      rows, leftOut: folder, tiles: items.count, trainedBy: trainedBy, trainedOrgans: bundle.thresholds.trainedOrgans ?? [])
    let o: [String: Any] = [
      "left_out": folder, "weights": model.weights ?? "", "trained_by": trainedBy, "rows": rows.map(\.json), "markdown": md,
    ]
    let d = try JSONSerialization.data(withJSONObject: o, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    try FileManager.default.createDirectory(
      atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try writeAtomically(d, to: out)
    if report != "none", let old = FileManager.default.contents(atPath: report),
      let updated = LeaveOneOut.replacingSection(in: String(decoding: old, as: UTF8.self), with: md)
    {
      try writeAtomically(Data(updated.utf8), to: report)
    }
    print(md)
  }
}
