import ArgumentParser
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

struct Report: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Draft reports for many slides from a template: Markdown, JSON and HTML per slide, summary.csv, resumable, shardable.",
    subcommands: [ReportRun.self, ReportMerge.self], defaultSubcommand: ReportRun.self)
}

struct ReportRun: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "run", abstract: "Draft reports (the default subcommand).",
    discussion:
      "Every slide is tried; a failing slide (or manifest line) gets one line on stderr and a 'failed' row in summary.csv, the others are drafted, and the exit status is 2 when any failed. Each slide's files are written as soon as it is drafted."
  )

  @OptionGroup var model: ModelOptions
  @Option(
    help: "Report template: a JSON file or a name in Prompts/reports (lung-biopsy, colorectal-biopsy).")
  var template: String
  @Option(help: "Manifest CSV with a 'slide' (or 'path') column and an optional 'mpp' column.") var manifest: String?
  @Option(help: "Output folder.") var out: String
  @Option(
    help:
      "This process's shard, i/n with 0 <= i < n (default: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX/EOSIN_SHARD_COUNT, when set)."
  )
  var shard: String?
  @Option(help: "Level-0 mpp for slides whose file lacks it (a manifest's mpp column wins).") var mpp: Double?
  @Argument(help: "Slides (or use --manifest).") var slides: [String] = []
  @Option(
    help:
      "GGUF language model for the generated fields, grounded and gated as in chat (default: $EOSIN_LM, else SmolLM2 from the cache; 'none': the embedded decoder)."
  )
  var lm: String?

  func validate() throws {
    if let m = mpp, !(m > 0 && m < 1000) { throw ValidationError("--mpp must be a positive number of microns per pixel") }
    if slides.isEmpty && manifest == nil { throw ValidationError("pass slides or --manifest FILE") }
  }

  func run() throws {
    // Everything that can be checked is checked before any work.
    let tmpl = try ReportTemplate.load(template, searchDirs: promptDirs("reports"))
    var list: [(path: String, mpp: Double?)] = slides.map { ($0, mpp) }
    var problems: [String] = []
    if let m = manifest {
      let man = try ReportManifest.load(m)
      guard !man.rows.isEmpty || !man.problems.isEmpty else { throw CLIError("\(m): the manifest lists no slides") }
      list += man.rows.map { ($0.path, $0.mpp ?? mpp) }
      problems = man.problems
    }
    let spec = try ShardSpec.resolve(shard)
    try checkWritable(out)
    let bundle = try model.bundle()
    var session: ChatSession? = nil
    if let dec = bundle.decoderDirectory {
      let chat = try ChatModel(directory: dec, imageDim: bundle.clip.embedDim, manifest: bundle.manifest)
      session = ChatSession(
        bundle: bundle, chat: chat, promptSets: try PromptSet.loadAll(searchDirs: promptDirs("zero-shot")),
        cacheDir: model.cacheDir)
      if let path = LanguageModel.Default.resolve(lm) {
        session?.grounded = try groundedLM(path, bundle: bundle).0
        warn(
          "generated fields: \((path as NSString).lastPathComponent), grounded on the classifier and Eosin's notes, claim-gated")
      }
    }
    let drafter = try ReportDrafter(
      template: tmpl, bundle: bundle, session: session, promptDirs: promptDirs("zero-shot"), cacheDir: model.cacheDir)
    let names = ReportNaming.names(list.map(\.path))
    let mine = list.indices.filter { spec.takes($0) }
    let log = BatchLog(total: mine.count + (spec.index == 0 ? problems.count : 0), verb: "drafted")
    var rows: [String] = []
    var runLog = ""
    if spec.index == 0 {
      for p in problems {
        log.failure(manifest ?? "", PipelineError.input(p))
        rows.append("\(csvField(manifest ?? "")),,failed,,\(csvField(p)),0")
        runLog += "FAILED: \(p)\n"
      }
    }
    for k in mine {
      let (path, slideMPP) = list[k]
      let name = names[k]
      let started = Probes.now()
      do {
        let s = try Slide(path: path)
        let hash = drafter.inputHash(slideHash: try SlideIndex.contentHash(s), mpp: slideMPP)
        let jsonPath = "\(out)/\(name).json"
        if let d = FileManager.default.contents(atPath: jsonPath),
          let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
          o["input_hash"] as? String == hash, FileManager.default.fileExists(atPath: "\(out)/\(name).md"),
          FileManager.default.fileExists(atPath: "\(out)/\(name).html")
        {
          rows.append(summaryRow(path, name, "done", o))
          runLog += "\(path): up to date, skipped\n"
          log.upToDate(path)
          continue
        }
        let bar = Progress(label: (path as NSString).lastPathComponent)
        let input = try AnalyzedSlide.analyze(
          slide: s, bundle: bundle, overrideMPP: slideMPP, cacheDir: model.cacheDir, progress: bar.update)
        let fields = try drafter.draft(input)
        let (md, json, html) = try drafter.render(name: name, inputHash: hash, fields: fields, input: input)
        // All three are written to temporary names first (a full disk fails here, leaving the
        // previous files intact), then renamed: Markdown, HTML, and last the JSON that carries the
        // input hash, so a slide counts as done only when all three are in place.
        try writeReportFiles([("md", md), ("html", html), ("json", json)], base: "\(out)/\(name)")
        rows.append(summaryRow(path, name, "done", (try? JSONSerialization.jsonObject(with: json) as? [String: Any]) ?? [:]))
        let flagged = fields.filter { !$0.flags.isEmpty }.count
        runLog += String(format: "%@: drafted in %.2f s, %d fields flagged\n", path, Probes.now() - started, flagged)
        log.succeeded(
          path,
          String(format: "drafted %@.md in %.1f s, %d of %d fields flagged", name, Probes.now() - started, flagged, fields.count))
      } catch {
        rows.append("\(csvField(path)),\(csvField(name)),failed,,\(csvField(BatchLog.line(path, error))),0")
        runLog += "\(path): FAILED: \(BatchLog.line(path, error))\n"
        log.failure(path, error)
      }
    }
    let header = "slide,name,status,verdict,note,flags\n"
    let summaryName = spec.count == 1 ? "summary.csv" : "summary.shard-\(spec.index)-of-\(spec.count).csv"
    try writeAtomically(Data((header + rows.map { $0 + "\n" }.joined()).utf8), to: "\(out)/\(summaryName)")
    let logName = spec.count == 1 ? "run.log" : "run.shard-\(spec.index)-of-\(spec.count).log"
    runLog += log.summary + "\n"
    try writeAtomically(Data(runLog.utf8), to: "\(out)/\(logName)")
    print(String(format: "drafted %d, up to date %d, failed %d -> %@", log.done, log.skipped, log.failed, out))
    try log.finish()
  }

  /// Writes BASE.EXT for each (EXT, data): every file to a temporary name, then each renamed.
  /// On a write error the temporary files are removed and the old files are left as they were.
  func writeReportFiles(_ files: [(String, Data)], base: String) throws {
    let tmp = files.map { "\(base).\($0.0).tmp-\(getpid())" }
    do {
      for ((_, d), t) in zip(files, tmp) {
        guard FileManager.default.createFile(atPath: t, contents: d) else {
          throw CLIError("\(t): cannot write (\(String(cString: strerror(errno))))")
        }
      }
      for ((ext, _), t) in zip(files, tmp) where rename(t, "\(base).\(ext)") != 0 {
        throw CLIError("\(base).\(ext): cannot write (\(String(cString: strerror(errno))))")
      }
    } catch {
      for t in tmp { try? FileManager.default.removeItem(atPath: t) }
      throw error
    }
  }

  func summaryRow(_ path: String, _ name: String, _ status: String, _ o: [String: Any]) -> String {
    let fields = (o["fields"] as? [[String: Any]]) ?? []
    let verdict =
      fields.first { $0["confidence"] is Double && ($0["name"] as? String ?? "").contains("classifier") }?["value"] as? String
      ?? ""
    return "\(csvField(path)),\(csvField(name)),\(status),\(csvField(verdict)),,\(o["flag_count"] as? Int ?? 0)"
  }

  func checkWritable(_ dir: String) throws {
    do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
      throw CLIError("\(dir): cannot create the output folder: \(error.localizedDescription)")
    }
    let probe = "\(dir)/.eosin-write-test-\(getpid())"
    guard FileManager.default.createFile(atPath: probe, contents: Data()) else {
      throw CLIError("\(dir): output folder is not writable")
    }
    try? FileManager.default.removeItem(atPath: probe)
  }
}

struct ReportMerge: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "merge", abstract: "Join shard summaries into summary.csv, in manifest order.")

  @Argument(help: "The output folder of the sharded runs.") var out: String
  @Option(help: "The manifest the shards ran on (gives the order).") var manifest: String?

  func run() throws {
    let files = ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).filter {
      $0.hasPrefix("summary.shard-") && $0.hasSuffix(".csv")
    }.sorted()
    guard !files.isEmpty else { throw CLIError("\(out): no shard summaries (summary.shard-*.csv)") }
    var header = ""
    var rows: [(String, String)] = []
    for f in files {
      let lines = String(decoding: FileManager.default.contents(atPath: "\(out)/\(f)") ?? Data(), as: UTF8.self).split(
        separator: "\n"
      ).map(String.init)
      header = lines.first ?? header
      for l in lines.dropFirst() { rows.append((l.split(separator: ",").first.map(String.init) ?? l, l)) }
    }
    var order: [String: Int] = [:]
    if let m = manifest, let man = try? ReportManifest.load(m) {
      for (i, r) in man.rows.enumerated() { order[r.path] = i }
    }
    rows.sort { (order[$0.0] ?? Int.max, $0.0) < (order[$1.0] ?? Int.max, $1.0) }
    try writeAtomically(Data((header + "\n" + rows.map { $0.1 + "\n" }.joined()).utf8), to: "\(out)/summary.csv")
    print("merged \(files.count) shard summaries (\(rows.count) slides) -> \(out)/summary.csv")
  }
}
