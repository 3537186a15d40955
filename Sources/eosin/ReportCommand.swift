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
  static let configuration = CommandConfiguration(commandName: "run", abstract: "Draft reports (the default subcommand).")

  @OptionGroup var model: ModelOptions
  @Option(help: "Report template: a JSON file or a name in Prompts/reports (lung-biopsy, colorectal-biopsy).") var template:
    String
  @Option(help: "Manifest CSV with a 'slide' (or 'path') column.") var manifest: String?
  @Option(help: "Output folder.") var out: String
  @Option(help: "This process's shard, i/n with 0 <= i < n (default: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT when set).")
  var shard: String?
  @Argument(help: "Slides (or use --manifest).") var slides: [String] = []
  @Option(
    help:
      "GGUF language model for the generated fields, grounded and gated as in chat (default: $EOSIN_LM, else SmolLM2 from the cache; 'none': the embedded decoder)."
  )
  var lm: String?

  func run() throws {
    // Everything that can be checked is checked before any work.
    let tmpl = try ReportTemplate.load(template, searchDirs: promptDirs("reports"))
    let list = try slideList()
    let spec: ShardSpec
    let env = ProcessInfo.processInfo.environment
    if let s = shard {
      spec = try ShardSpec.parse(s)
    } else if let i = env["SLURM_ARRAY_TASK_ID"], let n = env["SLURM_ARRAY_TASK_COUNT"] {
      spec = try ShardSpec.parse("\(i)/\(n)")
    } else {
      spec = ShardSpec(index: 0, count: 1)
    }
    try checkWritable(out)
    let bundle = try model.bundle()
    var session: ChatSession? = nil
    if let dec = bundle.decoderDirectory {
      let chat = try ChatModel(directory: dec, imageDim: bundle.clip.embedDim, manifest: bundle.manifest)
      let sets = ["lung", "colorectal", "colorectal-coarse", "malignancy"].compactMap {
        try? PromptSet.load($0, searchDirs: promptDirs("zero-shot"))
      }
      session = ChatSession(bundle: bundle, chat: chat, promptSets: sets, cacheDir: model.cacheDir)
      if let path = LanguageModel.Default.resolve(lm) {
        session?.grounded = try groundedLM(path)
        warn(
          "generated fields: \((path as NSString).lastPathComponent), grounded on the classifier and Eosin's notes, claim-gated")
      }
    }
    let drafter = try ReportDrafter(template: tmpl, bundle: bundle, session: session, promptDirs: promptDirs("zero-shot"))
    var rows: [String] = []
    var log = ""
    let t0 = Probes.now()
    var done = 0, skipped = 0, failed = 0
    for (k, path) in list.enumerated() where spec.takes(k) {
      let name = Self.outputName(path, k, list)
      let started = Probes.now()
      do {
        let s = try Slide(path: path)
        let hash = drafter.inputHash(slideHash: try SlideIndex.contentHash(s))
        let jsonPath = "\(out)/\(name).json"
        if let d = FileManager.default.contents(atPath: jsonPath),
          let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
          o["input_hash"] as? String == hash, FileManager.default.fileExists(atPath: "\(out)/\(name).md"),
          FileManager.default.fileExists(atPath: "\(out)/\(name).html")
        {
          rows.append(summaryRow(path, name, "done", o))
          log += "\(path): up to date, skipped\n"
          skipped += 1
          continue
        }
        let tissue = try TissueDetector().detect(s)
        let emb = try SlideIndex.embed(slide: s, tissue: tissue, bundle: bundle, overrideMPP: nil, cacheDir: model.cacheDir)
        if let sess = session { try sess.open([path]) }
        let fields = try drafter.draft(slide: s, tissue: tissue, embeddings: emb)
        let thumb = try ImageCodec.encodePNG(try s.thumbnail(maxSize: 512).image)
        let (md, json, html) = try drafter.render(name: name, inputHash: hash, fields: fields, thumbnailPNG: thumb)
        // Markdown and HTML first, JSON (which carries the input hash) last: a slide counts as
        // done only when all three are in place.
        try writeAtomically(md, to: "\(out)/\(name).md")
        try writeAtomically(html, to: "\(out)/\(name).html")
        try writeAtomically(json, to: "\(out)/\(name).json")
        rows.append(summaryRow(path, name, "done", (try? JSONSerialization.jsonObject(with: json) as? [String: Any]) ?? [:]))
        log += String(
          format: "%@: drafted in %.2f s, %d fields flagged\n", path, Probes.now() - started,
          fields.filter { !$0.flags.isEmpty }.count)
        done += 1
      } catch {
        rows.append("\(csvField(path)),\(csvField(name)),failed,,\(csvField(error.localizedDescription)),0")
        log += "\(path): FAILED: \(error.localizedDescription)\n"
        warn("eosin: warning: \(error.localizedDescription)")
        failed += 1
      }
    }
    let header = "slide,name,status,verdict,note,flags\n"
    let summaryName = spec.count == 1 ? "summary.csv" : "summary.shard-\(spec.index)-of-\(spec.count).csv"
    try writeAtomically(Data((header + rows.map { $0 + "\n" }.joined()).utf8), to: "\(out)/\(summaryName)")
    let logName = spec.count == 1 ? "run.log" : "run.shard-\(spec.index)-of-\(spec.count).log"
    log += String(format: "drafted %d, skipped %d, failed %d in %.1f s\n", done, skipped, failed, Probes.now() - t0)
    try writeAtomically(Data(log.utf8), to: "\(out)/\(logName)")
    print(String(format: "drafted %d, up to date %d, failed %d, in %.1f s -> %@", done, skipped, failed, Probes.now() - t0, out))
  }

  /// The slides, in order: arguments, or the manifest's slide column.
  func slideList() throws -> [String] {
    var list = slides
    if let m = manifest {
      guard let d = FileManager.default.contents(atPath: m) else { throw CLIError("\(m): manifest not found") }
      let rows: [[String]]
      do { rows = try CSV.parse(String(decoding: d, as: UTF8.self), path: m) } catch {
        throw CLIError(error.localizedDescription)
      }
      guard let h = rows.first, let col = h.firstIndex(of: "slide") ?? h.firstIndex(of: "path") else {
        throw CLIError("\(m): header needs a 'slide' or 'path' column")
      }
      var seen: [String: Int] = [:]
      for (i, r) in rows.dropFirst().enumerated() {
        guard r.count == h.count else { throw CLIError("\(m):\(i + 2): expected \(h.count) fields, found \(r.count)") }
        let p =
          r[col].hasPrefix("/") ? r[col] : ((m as NSString).deletingLastPathComponent as NSString).appendingPathComponent(r[col])
        if let prev = seen[p] { throw CLIError("\(m):\(i + 2): slide '\(r[col])' is already listed on line \(prev)") }
        seen[p] = i + 2
        list.append(p)
      }
    }
    guard !list.isEmpty else { throw ValidationError("pass slides or --manifest FILE") }
    return list
  }

  /// Output file names: the slide's base name, suffixed with its position when two share one.
  static func outputName(_ path: String, _ k: Int, _ all: [String]) -> String {
    let base = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    let same = all.filter { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension == base }.count
    return same > 1 ? "\(base)-\(k)" : base
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
    if let m = manifest, let d = FileManager.default.contents(atPath: m),
      let parsed = try? CSV.parse(String(decoding: d, as: UTF8.self), path: m),
      let h = parsed.first, let col = h.firstIndex(of: "slide") ?? h.firstIndex(of: "path")
    {
      for (i, r) in parsed.dropFirst().enumerated() where r.count > col {
        order[
          r[col].hasPrefix("/") ? r[col] : ((m as NSString).deletingLastPathComponent as NSString).appendingPathComponent(r[col])] =
          i
      }
    }
    rows.sort { (order[$0.0] ?? Int.max, $0.0) < (order[$1.0] ?? Int.max, $1.0) }
    try writeAtomically(Data((header + "\n" + rows.map { $0.1 + "\n" }.joined()).utf8), to: "\(out)/summary.csv")
    print("merged \(files.count) shard summaries (\(rows.count) slides) -> \(out)/summary.csv")
  }
}
