import EosinModels
import EosinSlide
import EosinTokenizer
import EosinWeights
import Foundation

/// A report template (`Prompts/reports/*.json`): sections of fields, each bound to exactly one
/// of a zero-shot prompt set, a decoder question, or a slide fact.
public struct ReportTemplate: Codable, Sendable {
  public struct Field: Codable, Sendable {
    public var name: String
    public var promptSet: String?
    public var question: String?
    public var answerForm: String?
    public var facts: String?
    enum CodingKeys: String, CodingKey {
      case name, question, facts
      case promptSet = "prompt_set", answerForm = "answer_form"
    }
  }
  public struct Section: Codable, Sendable {
    public var title: String
    public var fields: [Field]
  }
  public var name: String
  public var version: Int
  public var title: String
  public var sections: [Section]
  public var sha256 = ""
  enum CodingKeys: String, CodingKey { case name, version, title, sections }

  public static let knownFacts: Set<String> = ["size", "mpp", "tissue_area", "vendor", "objective"]

  /// Loads and validates a template; a bare name is looked up in `searchDirs`.
  /// - Throws: ``PipelineError/file`` naming the field and the problem.
  public static func load(_ path: String, searchDirs: [String]) throws -> ReportTemplate {
    var p = path
    if !FileManager.default.fileExists(atPath: p) {
      for d in searchDirs where FileManager.default.fileExists(atPath: "\(d)/\(path).json") { p = "\(d)/\(path).json" }
    }
    guard let data = FileManager.default.contents(atPath: p) else {
      throw PipelineError.file(path: path, message: "report template not found")
    }
    let text = String(decoding: data, as: UTF8.self)
    do { _ = try JSONSerialization.jsonObject(with: data) } catch {
      let (l, c) = jsonErrorLocation(error, in: text)
      throw PipelineError.file(path: p, message: "malformed JSON at line \(l), column \(c)")
    }
    var t: ReportTemplate
    do { t = try JSONDecoder().decode(ReportTemplate.self, from: data) } catch {
      throw PipelineError.file(path: p, message: "not a report template: \(error)")
    }
    guard !t.sections.isEmpty else { throw PipelineError.file(path: p, message: "no sections") }
    var names: Set<String> = []
    for s in t.sections {
      for f in s.fields {
        let n = [f.promptSet, f.question, f.facts].compactMap { $0 }.count
        guard !f.name.isEmpty else { throw PipelineError.file(path: p, message: "a field in section '\(s.title)' has no name") }
        guard names.insert(f.name).inserted else {
          throw PipelineError.file(path: p, message: "field '\(f.name)': duplicate field name")
        }
        guard n == 1 else {
          throw PipelineError.file(
            path: p, message: "field '\(f.name)': must be bound to exactly one of prompt_set, question, facts (found \(n))")
        }
        if let fa = f.facts, !knownFacts.contains(fa) {
          throw PipelineError.file(
            path: p, message: "field '\(f.name)': unknown fact '\(fa)' (known: \(knownFacts.sorted().joined(separator: ", ")))")
        }
        if let q = f.question, q.trimmingCharacters(in: .whitespaces).isEmpty {
          throw PipelineError.file(path: p, message: "field '\(f.name)': empty question")
        }
      }
    }
    t.sha256 = SHA256.hex([UInt8](data))
    return t
  }
}

/// One drafted field.
public struct DraftField: Sendable {
  public var section: String
  public var name: String
  public var value: String
  public var confidence: Float?
  public var flags: [ReviewFlag]
  public var evidence: [EvidenceTile]
  /// Where each evidence tile is, in words: level-0 `(x, y)`, or the image's file name.
  public var evidenceLabels: [String] = []
  /// The class the field asserts (a classifier verdict, or the class a generated answer names),
  /// for the contradiction check across fields.
  public var assertedClass: String? = nil
  /// For classifier and generated fields: which prompt set judged the field, its temperature,
  /// and why that set.
  public var judgedBy: String? = nil

  public init(
    section: String, name: String, value: String, confidence: Float?, flags: [ReviewFlag], evidence: [EvidenceTile]
  ) {
    self.section = section
    self.name = name
    self.value = value
    self.confidence = confidence
    self.flags = flags
    self.evidence = evidence
  }
}

/// Drafts reports: fills every field of a template for one slide. Outputs are deterministic
/// (no timestamps), so a rerun writes byte-identical files.
public final class ReportDrafter {
  public let template: ReportTemplate
  public let session: ChatSession?
  public let bundle: ModelBundle
  let promptSets: [String: PromptSet]
  /// The organ check over the prompt sets of `promptDirs`, for drafting without a chat session.
  let organs: OrganCheck?
  let cacheDir: String?
  /// The template's organ prompt set, which judges its generated fields while drafting.
  let organSet: String?
  public static let header = "DRAFT — generated by software, requires review by a pathologist"

  /// - Parameter cacheDir: where text embeddings and calibrations are kept (default: the
  ///   session's), so a fitted temperature is used with or without a chat session.
  public init(
    template: ReportTemplate, bundle: ModelBundle, session: ChatSession?, promptDirs: [String], cacheDir: String? = nil
  ) throws {
    self.template = template
    self.bundle = bundle
    self.session = session
    self.cacheDir = cacheDir ?? session?.cacheDir
    var sets: [String: PromptSet] = [:]
    for s in template.sections {
      for f in s.fields {
        if let n = f.promptSet, sets[n] == nil {
          do { sets[n] = try PromptSet.load(n, searchDirs: promptDirs) } catch {
            throw PipelineError.input("template field '\(f.name)': \(error.localizedDescription)")
          }
        }
      }
    }
    promptSets = sets
    organs = try OrganCheck(
      organSets: (try? PromptSet.loadAll(searchDirs: promptDirs)) ?? Array(sets.values), bundle: bundle,
      cacheDir: self.cacheDir)
    // The template's own organ set judges its generated fields (a lung-biopsy narrative is
    // checked against the lung classes), unless a question names another organ.
    organSet = template.sections.flatMap(\.fields).compactMap(\.promptSet).first { !(sets[$0]?.organWords ?? []).isEmpty }
  }

  /// The hash that decides whether a slide's outputs are current: slide content, the mpp given
  /// for it, template and model sha256s, and the weights manifest (its review thresholds, and
  /// the projector and adapters it names for the language model).
  public func inputHash(slideHash: String, mpp: Double? = nil) -> String {
    let manifest = (try? bundle.manifest.encoded()).map { SHA256.hex(Array($0)) } ?? "-"
    return SHA256.hex(
      Array(
        ([
          slideHash, mpp.map { String($0) } ?? "-", template.sha256, bundle.clipSHA256, session?.chat.decoderSHA256 ?? "-",
          manifest,
        ]
          + (session?.grounded.map { g in [(g.lm.path as NSString).lastPathComponent, "\(g.lm.model.file.fileSize)"] } ?? []))
          .joined(separator: "|").utf8))
  }

  /// Drafts one analysed input. The chat session (when the template asks questions) is given the
  /// same analysed input, so nothing is embedded twice. Fields that contradict each other (a
  /// malignant class in one, a benign one in another) are flagged, naming both.
  public func draft(_ input: AnalyzedSlide) throws -> [DraftField] {
    let saved = (session?.preferredSet, session?.preferredReason)
    if let o = organSet {
      session?.preferredSet = o
      session?.preferredReason = "the template's set (\(template.name))"
    }
    defer {
      session?.preferredSet = saved.0
      session?.preferredReason = saved.1 ?? "chosen"
    }
    if let s = session, s.input !== input { s.load(input) }
    var out: [DraftField] = []
    let policy = ReviewPolicy(thresholds: bundle.thresholds)
    for s in template.sections {
      for f in s.fields {
        if let fa = f.facts {
          var fl: [ReviewFlag] = []
          let v: String
          if let slide = input.slide, let tissue = input.tissue {
            let (W, H) = slide.dimensions
            switch fa {
            case "size": v = "\(W) x \(H) px"
            case "mpp":
              v =
                input.mpp.map { String(format: "%.4f µm/px", $0) + (slide.mppX == nil ? " (given, not in the file)" : "") }
                ?? "unknown"
            case "tissue_area":
              v =
                input.mpp.map {
                  String(
                    format: "%.2f mm² (%.1f%% of the slide)", Double(W * H) * $0 * $0 / 1e6 * tissue.tissueFraction,
                    tissue.tissueFraction * 100)
                } ?? String(format: "%.1f%% of the slide", tissue.tissueFraction * 100)
            case "vendor": v = slide.vendor
            default: v = slide.objectivePower.map { "\(Int($0))x" } ?? "unknown"
            }
            if fa == "mpp" && slide.mppX == nil {
              fl.append(ReviewFlag(code: "no-mpp", reason: "the slide records no microns-per-pixel"))
            }
          } else {
            v = "not known for a set of images"
          }
          out.append(DraftField(section: s.title, name: f.name, value: v, confidence: nil, flags: fl, evidence: []))
        } else if let n = f.promptSet, let ps = promptSets[n] {
          // The session's verdict when there is one (computed once, shared with its answers).
          let (clf, r) =
            try session?.verdict(ps)
            ?? {
              let c = try ZeroShotClassifier(bundle: bundle, promptSet: ps, cacheDir: cacheDir)
              return (c, input.classify(c, policy: policy, organs: organs))
            }()
          let ev = Array(r.evidence[r.verdict].prefix(5))
          var d = DraftField(
            section: s.title, name: f.name, value: "\(r.classNames[r.verdict]) (\(String(format: "%.2f", r.probs[r.verdict])))",
            confidence: r.probs[r.verdict], flags: r.flags, evidence: ev)
          d.evidenceLabels = ev.map { e in input.tileIndex(x: e.x, y: e.y).map { input.tileLabel($0) } ?? "(\(e.x), \(e.y))" }
          if input.kind == .images {
            // Image sets: evidence tiles all sit at (0, 0); name them by the classifier's ranking.
            let order = r.tiles.indices.sorted { r.tiles[$0].logits[r.verdict] > r.tiles[$1].logits[r.verdict] }.prefix(5)
            d.evidenceLabels = order.map { input.tileLabel($0) }
          }
          d.assertedClass = r.verdict == clf.backgroundIndex ? nil : r.classNames[r.verdict]
          d.judgedBy = "\(ps.name) set, T=\(String(format: "%.3f", clf.temperature)) (\(clf.temperatureSource.label))"
          out.append(d)
        } else if let q = f.question {
          guard let chat = session else {
            out.append(
              DraftField(
                section: s.title, name: f.name, value: "(not drafted: these weights have no decoder)", confidence: nil,
                flags: [ReviewFlag(code: "no-decoder", reason: "no decoder")], evidence: []))
            continue
          }
          let a = try chat.ask(q)
          // One paragraph per field: line breaks in generated text would break the Markdown list.
          let text = a.text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
          }.joined(separator: " ")
          var d = DraftField(
            section: s.title, name: f.name, value: text + (a.source.map { " (source: \($0))" } ?? ""),
            confidence: a.shownConfidence, flags: a.flags, evidence: a.evidence)
          d.evidenceLabels = a.evidenceLabels
          d.assertedClass = a.answerClass
          d.judgedBy = a.promptSet == "-" ? a.judgedBy : "\(a.promptSet) set, \(a.temperature); \(a.judgedBy)"
          out.append(d)
        }
      }
    }
    for (i, flag) in ReviewPolicy.contradictions(out.map { ($0.name, $0.assertedClass) }) {
      out[i].flags.append(flag)
    }
    return out
  }

  /// Markdown, JSON and HTML for one slide. With `input`, the HTML embeds the slide thumbnail
  /// and a small crop of each evidence tile.
  public func render(name: String, inputHash: String, fields: [DraftField], input: AnalyzedSlide?) throws -> (
    md: Data, json: Data, html: Data
  ) {
    var md = "# \(template.title): \(name)\n\n**\(Self.header).**\n\n"
    var html =
      "<!doctype html><meta charset=\"utf-8\"><title>\(esc(template.title)): \(esc(name))</title><style>body{font-family:sans-serif;max-width:60em;margin:2em auto}.flag{background:#fff3cd;border-left:4px solid #e0a800;padding:.2em .5em}.draft{color:#b00;font-weight:bold}.ev{display:inline-block;margin:.2em;font-size:80%;text-align:center}.ev img{display:block;width:96px;height:96px;object-fit:cover}.meta{color:#555;font-size:85%}</style>"
    html += "<h1>\(esc(template.title)): \(esc(name))</h1><p class=\"draft\">\(Self.header).</p>"
    if let a = input, let s = a.slide, let th = try? s.thumbnail(maxSize: 512) {
      let png = try ImageCodec.encodePNG(th.image)
      html += "<img alt=\"thumbnail\" style=\"max-width:24em\" src=\"data:image/png;base64,\(Data(png).base64EncodedString())\">"
    }
    var section = ""
    var jf: [[String: Any]] = []
    for f in fields {
      if f.section != section {
        section = f.section
        md += "\n## \(section)\n\n"
        html += "<h2>\(esc(section))</h2>"
      }
      let conf = f.confidence.map { String(format: " · confidence %.2f", $0) } ?? ""
      if f.flags.isEmpty {
        md += "- **\(f.name):** \(f.value)\(conf)\n"
        html += "<p><b>\(esc(f.name)):</b> \(esc(f.value))\(esc(conf))</p>"
      } else {
        let why = f.flags.map { $0.reason }.joined(separator: "; ")
        md += "- ⚠ **\(f.name): \(f.value)**\(conf) — **REVIEW:** \(why)\n"
        html += "<p class=\"flag\">⚠ <b>\(esc(f.name)): \(esc(f.value))</b>\(esc(conf)) — <b>REVIEW:</b> \(esc(why))</p>"
      }
      if let j = f.judgedBy {
        md += "  - judged by: \(j)\n"
        html += "<p class=\"meta\">judged by: \(esc(j))</p>"
      }
      let labels = f.evidenceLabels.count == f.evidence.count ? f.evidenceLabels : f.evidence.map { "(\($0.x), \($0.y))" }
      if !f.evidence.isEmpty {
        md +=
          "  - evidence tiles (\(input?.kind == .images ? "images" : "level-0 x, y; \(f.evidence[0].size) px"), p of the verdict): "
          + zip(labels, f.evidence).map { "\($0) \(String(format: "%.2f", $1.probability))" }.joined(separator: "; ") + "\n"
        html += "<div>"
        for (k, (label, e)) in zip(labels, f.evidence).enumerated() {
          var img = ""
          if let a = input {
            let idx =
              a.kind == .images ? a.paths.firstIndex { ($0 as NSString).lastPathComponent == label } : a.tileIndex(x: e.x, y: e.y)
            if let i = idx, let crop = try? a.tileImage(i, maxSize: 96), let png = try? ImageCodec.encodePNG(crop) {
              img = "<img alt=\"evidence tile \(k + 1)\" src=\"data:image/png;base64,\(Data(png).base64EncodedString())\">"
            }
          }
          html += "<span class=\"ev\">\(img)\(esc(label))<br>p \(String(format: "%.2f", e.probability))</span>"
        }
        html += "</div>"
      }
      jf.append([
        "section": f.section, "name": f.name, "value": f.value, "confidence": f.confidence.map { Double($0) as Any } ?? NSNull(),
        "flagged": !f.flags.isEmpty, "flags": f.flags.map { ["code": $0.code, "reason": $0.reason] },
        "evidence": zip(labels, f.evidence).map {
          ["x": $1.x, "y": $1.y, "size": $1.size, "probability": Double($1.probability), "label": $0] as [String: Any]
        },
        "judged_by": f.judgedBy ?? NSNull(),
      ])
    }
    let json: [String: Any] = [
      "draft": Self.header, "slide": name, "input": input?.paths ?? [], "template": template.name,
      "template_version": template.version, "input_hash": inputHash,
      "clip_sha256": bundle.clipSHA256, "decoder_sha256": session?.chat.decoderSHA256 ?? NSNull(),
      "language_model": session?.grounded.map { ($0.lm.path as NSString).lastPathComponent } ?? NSNull(), "fields": jf,
      "flag_count": fields.filter { !$0.flags.isEmpty }.count,
    ]
    return (
      Data(md.utf8),
      try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
      Data(html.utf8)
    )
  }

  func esc(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(
      of: ">", with: "&gt;")
  }
}

/// Which slides a shard takes: slide k (0-based, in manifest order) goes to shard k mod n.
public struct ShardSpec: Equatable, Sendable {
  public var index: Int
  public var count: Int

  public init(index: Int, count: Int) {
    self.index = index
    self.count = count
  }

  /// Parses "i/n" with 0 <= i < n.
  public static func parse(_ s: String) throws -> ShardSpec {
    let p = s.split(separator: "/", omittingEmptySubsequences: false)
    guard p.count == 2, let i = Int(p[0]), let n = Int(p[1]) else {
      throw PipelineError.input("bad shard spec '\(s)': expected i/n, for example 0/3")
    }
    guard n > 0 else { throw PipelineError.input("bad shard spec '\(s)': the shard count must be at least 1") }
    guard i >= 0 && i < n else { throw PipelineError.input("bad shard spec '\(s)': the index must be 0...\(n - 1) (0-based)") }
    return ShardSpec(index: i, count: n)
  }

  public func takes(_ k: Int) -> Bool { k % count == index }

  /// The shard from `--shard i/n` when given, else Slurm's `SLURM_ARRAY_TASK_ID` and
  /// `SLURM_ARRAY_TASK_COUNT`, else a Kubernetes indexed Job's `JOB_COMPLETION_INDEX` with the
  /// count in `EOSIN_SHARD_COUNT` (Kubernetes does not export the Job's completions), else the
  /// whole list (0/1).
  /// - Throws: ``PipelineError/input`` for a bad spec, or a Kubernetes index without its count.
  public static func resolve(_ option: String?, environment env: [String: String] = ProcessInfo.processInfo.environment)
    throws -> ShardSpec
  {
    if let s = option { return try parse(s) }
    if let i = env["SLURM_ARRAY_TASK_ID"], let n = env["SLURM_ARRAY_TASK_COUNT"] { return try parse("\(i)/\(n)") }
    if let i = env["JOB_COMPLETION_INDEX"] {
      guard let n = env["EOSIN_SHARD_COUNT"] else {
        throw PipelineError.input(
          "JOB_COMPLETION_INDEX=\(i) is set but EOSIN_SHARD_COUNT is not: set it to the Job's completions (or pass --shard i/n)")
      }
      return try parse("\(i)/\(n)")
    }
    return ShardSpec(index: 0, count: 1)
  }
}

/// A report manifest: a CSV with a `slide` (or `path`) column and an optional `mpp` column
/// (the slide's level-0 microns per pixel, for files that lack it). Relative paths are taken
/// from the manifest's folder. A UTF-8 byte-order mark is ignored.
public struct ReportManifest: Sendable {
  public struct Row: Sendable {
    /// The slide's path.
    public var path: String
    /// The level-0 mpp from the `mpp` column, when given.
    public var mpp: Double?
    /// The line in the manifest (1-based; the header is line 1).
    public var line: Int
  }

  public var rows: [Row]
  /// Lines that cannot be used (a duplicated slide, a bad mpp, a wrong field count), each
  /// already phrased as `MANIFEST:LINE: problem`; the other rows are still run.
  public var problems: [String]

  /// - Throws: ``PipelineError/file`` when the manifest cannot be read or has no usable header.
  public static func load(_ path: String) throws -> ReportManifest {
    guard let d = FileManager.default.contents(atPath: path) else {
      throw PipelineError.file(path: path, message: "manifest not found or unreadable")
    }
    var text = String(decoding: d, as: UTF8.self)
    if text.hasPrefix("\u{FEFF}") { text.removeFirst() }
    let rows: [[String]]
    do { rows = try CSV.parse(text, path: path) } catch {
      throw PipelineError.file(path: path, message: "\(error.localizedDescription)")
    }
    guard let h0 = rows.first else { throw PipelineError.file(path: path, message: "the manifest is empty") }
    let h = h0.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
    guard let col = h.firstIndex(of: "slide") ?? h.firstIndex(of: "path") else {
      throw PipelineError.file(
        path: path, message: "the header needs a 'slide' or 'path' column (found: \(h.joined(separator: ", ")))")
    }
    let mppCol = h.firstIndex(of: "mpp")
    let dir = (path as NSString).deletingLastPathComponent
    var out = ReportManifest(rows: [], problems: [])
    var seen: [String: Int] = [:]
    for (i, r) in rows.dropFirst().enumerated() {
      let line = i + 2
      if r.allSatisfy({ $0.trimmingCharacters(in: .whitespaces).isEmpty }) { continue }
      guard r.count == h.count else {
        out.problems.append("\(path):\(line): expected \(h.count) fields, found \(r.count)")
        continue
      }
      let cell = r[col]
      guard !cell.isEmpty else {
        out.problems.append("\(path):\(line): empty slide path")
        continue
      }
      let p = cell.hasPrefix("/") || dir.isEmpty ? cell : (dir as NSString).appendingPathComponent(cell)
      if let prev = seen[p] {
        out.problems.append("\(path):\(line): slide '\(cell)' is already listed on line \(prev); the repeat is ignored")
        continue
      }
      var mpp: Double? = nil
      if let mc = mppCol, !r[mc].trimmingCharacters(in: .whitespaces).isEmpty {
        guard let v = Double(r[mc].trimmingCharacters(in: .whitespaces)), v > 0, v < 1000 else {
          out.problems.append("\(path):\(line): mpp '\(r[mc])' is not a positive number of microns per pixel")
          continue
        }
        mpp = v
      }
      seen[p] = line
      out.rows.append(Row(path: p, mpp: mpp, line: line))
    }
    return out
  }
}

/// Output names for report files: the slide's base name when no other input shares it, else the
/// base name and the first 8 hex digits of the sha256 of its path. Stable across runs and never
/// the same for two inputs.
public enum ReportNaming {
  public static func names(_ paths: [String]) -> [String] {
    let bases = paths.map { (($0 as NSString).lastPathComponent as NSString).deletingPathExtension }
    var count: [String: Int] = [:]
    for b in bases { count[b.lowercased(), default: 0] += 1 }
    return zip(paths, bases).map { p, b in
      count[b.lowercased()]! > 1 ? "\(b)-\(SHA256.hex(Array(p.utf8)).prefix(8))" : b
    }
  }
}
