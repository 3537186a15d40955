import EosinModels
import EosinPipelines
import Foundation

/// The chat-evaluation table of EVALUATION.md: each chat model (the embedded decoder, the
/// grounded language model without and with slide tokens) answers the same closed questions on
/// test tiles, off-topic questions and general pathology questions, through ``ChatSession`` as
/// `eosin chat` asks them. `eosin train finalize` and `eosin eval chat` both run it.
public struct ChatComparison {
  /// The weights whose classifier judges every answer.
  public var bundle: ModelBundle
  /// The embedded decoder, the offline fallback.
  public var chat: ChatModel
  /// The language model (GGUF); nil leaves its rows out.
  public var languageModel: String?
  /// The grounded language model from a GGUF path; with the bundle, its slide-token projector
  /// when one was trained for that model.
  public var makeGrounded: (String, ModelBundle?) throws -> GroundedLM
  /// The off-topic and general pathology questions.
  public var questions: ChatEvaluation.QuestionSet
  /// Progress lines.
  public var log: (String) -> Void
  /// Where to write every closed-question answer as a JSON line (model, tile, truth, verdict,
  /// answer, flags, correct); nil for nowhere.
  public var answersFile: String? = nil
  /// The questions' file as the report names it.
  public var questionsFile = "Prompts/eval/general-questions.json"
  /// Questions worded unlike the notes (lay or roundabout phrasings, `Prompts/eval/paraphrase-*.json`)
  /// and the files they came from: their own table, general questions only; nil leaves it out.
  public var layQuestions: (files: [String], questions: [ChatEvaluation.GeneralQuestion])? = nil
  /// The notes every session retrieves from (the embedded decoder quotes them on general
  /// questions; a language model brings its own).
  public var notes: KnowledgeNotes? = nil

  /// Collects what the rows need; nothing is run until ``run(cases:sets:split:)``.
  public init(
    bundle: ModelBundle, chat: ChatModel, languageModel: String?, questions: ChatEvaluation.QuestionSet,
    makeGrounded: @escaping (String, ModelBundle?) throws -> GroundedLM, log: @escaping (String) -> Void
  ) {
    self.bundle = bundle
    self.chat = chat
    self.languageModel = languageModel
    self.questions = questions
    self.makeGrounded = makeGrounded
    self.log = log
  }

  /// The questions of several question files, in order (for ``layQuestions``).
  public static func generalQuestions(_ paths: [String]) throws -> [ChatEvaluation.GeneralQuestion] {
    try paths.flatMap { try questions($0).questions }
  }

  /// Reads the general and off-topic questions (`Prompts/eval/general-questions.json`).
  /// - Throws: ``TrainingError/data(_:)`` naming the file when it cannot be read or is not a
  ///   question set (`questions` with q, facts and contradictions; `off_topic`).
  public static func questions(_ path: String) throws -> ChatEvaluation.QuestionSet {
    guard let data = FileManager.default.contents(atPath: path) else { throw TrainingError.data("\(path): cannot read the file") }
    do {
      return try JSONDecoder().decode(ChatEvaluation.QuestionSet.self, from: data)
    } catch {
      throw TrainingError.data(
        "\(path): not a question set (a JSON object with questions, each with q, facts and contradictions, and off_topic)")
    }
  }

  /// The prompt sets the chat chooses among, as `eosin chat` loads them: the datasets' own sets
  /// (`names`, in order), then the tissue, malignancy and organ sets. A set that does not load is
  /// left out.
  public static func sessionSets(_ names: [String], load: (String) throws -> PromptSet) -> [PromptSet] {
    var sets: [PromptSet] = []
    for n in names + ["tissue", "malignancy", "organ"] where !sets.contains(where: { $0.name == n }) {
      if let s = try? load(n) { sets.append(s) }
    }
    return sets
  }

  /// Closed-question cases: about `perDataset` tiles of each dataset (every n-th), each judged
  /// against its dataset's own prompt set through the knowledge notes' label mapping.
  public static func cases(
    _ datasets: [(items: [LabeledTiles.Item], set: PromptSet)], knowledge: [[String: Any]], perDataset: Int = 30
  ) throws -> [ChatEvaluation.Case] {
    var cases: [ChatEvaluation.Case] = []
    for (its, ps) in datasets {
      let map = try LabeledTiles.mapLabels(Set(its.map { $0.label }), to: ps, knowledge: knowledge)
      for i in stride(from: 0, to: its.count, by: max(1, its.count / perDataset)) {
        cases.append(ChatEvaluation.Case(paths: [its[i].path], set: ps, truth: map[its[i].label]!))
      }
    }
    return cases
  }

  /// Closed-question cases from tile folders: each dataset's `split` under the split rule the
  /// weights were trained with (`stratified`), judged against its own (first) prompt set.
  /// Returns the cases and the sets the chat chooses among (``sessionSets(_:load:)``).
  public static func cases(
    _ datasets: [FinalizeDataset], split: Split, stratified: Bool, knowledge: [[String: Any]], perDataset: Int = 30,
    load: (String) throws -> PromptSet
  ) throws -> (cases: [ChatEvaluation.Case], sets: [PromptSet]) {
    var perSet: [(items: [LabeledTiles.Item], set: PromptSet)] = []
    for ds in datasets {
      let all = try LabeledTiles.load(ds.dir)
      let splits = TileManifest.splits(
        dataset: ds.folder, groups: all.map(\.group), labels: all.map(\.label), stratified: stratified)
      perSet.append((all.filter { splits[$0.group] == split }, try load(ds.promptSets[0])))
    }
    return (
      try cases(perSet, knowledge: knowledge, perDataset: perDataset),
      sessionSets(datasets.flatMap(\.promptSets), load: load)
    )
  }

  /// Runs every row; returns the markdown section and its metrics (`chat_<row>_...`).
  /// - Parameter sets: the prompt sets the chat chooses among, as `eosin chat` loads them.
  public func run(cases: [ChatEvaluation.Case], sets: [PromptSet], split: String = "test") throws -> (
    markdown: String, metrics: [String: JSONValue]
  ) {
    guard let first = cases.first else { return ("", [:]) }
    let qs = questions
    var md =
      "\n## Chat answers\n\nThe same questions to each chat model, through `ChatSession` as `eosin chat` asks them: \"What is the diagnosis in this lung (prostate, ...) tissue?\" on \(cases.count) \(split) tiles (every n-th tile of each dataset, naming the dataset's organ as a pathologist who knows the specimen would; the answer's asserted class, negations aside, against the tile's label; without the organ, every diagnosis is flagged `organ-unconfirmed`), \(qs.off_topic.count) off-topic questions and \(qs.questions.count) general pathology questions with key facts (`\(questionsFile)`). Flags are the chat's own review flags.\n\n| chat model | closed-question accuracy (n) | answers contradicting the classifier that are flagged (n) | unflagged answers that are wrong | off-topic answered without a diagnosis (n) | general: states the key facts | general: contradicts them (n) | general: unflagged answers missing a key fact (n) |\n|---|---|---|---|---|---|---|---|\n"
    var rows: [(String, String, GroundedLM?)] = [("embedded decoder (GPT-2 4x256, slide tokens)", "decoder", nil)]
    if let lmPath = languageModel {
      let name = (lmPath as NSString).lastPathComponent
      rows.append(("\(name), grounded on the classifier and notes (no slide tokens)", "lm", try makeGrounded(lmPath, nil)))
      let withTokens = try makeGrounded(lmPath, bundle)
      if withTokens.projector != nil {
        rows.append(
          (
            withTokens.adapters == nil
              ? "\(name) with slide tokens (`train lm-projector`), grounded likewise"
              : "\(name) with slide tokens and LoRA adapters on slide questions (`train lm-projector`, then `train lm-adapters`), grounded likewise",
            "lm_slide_tokens", withTokens
          ))
      }
    }
    var metrics: [String: JSONValue] = [:]
    var lines = ""
    /// One answer as a JSON line of the answers file.
    func record(_ o: [String: Any]) {
      if let d = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys, .withoutEscapingSlashes]) {
        lines += String(decoding: d, as: UTF8.self) + "\n"
      }
    }
    var lay = ""
    var yesNo = ""
    // Closed questions by the case's prompt set, per row: (n, correct, unflagged, unflagged wrong).
    let setNames = cases.reduce(into: [String]()) { if !$0.contains($1.set.name) { $0.append($1.set.name) } }
    var bySet: [[String: (Int, Int, Int, Int)]] = []
    for (name, key, grounded) in rows {
      var counts: [String: (Int, Int, Int, Int)] = [:]
      let s = ChatSession(bundle: bundle, chat: chat, promptSets: sets, cacheDir: nil)
      s.grounded = grounded
      s.notes = notes
      let r = try ChatEvaluation.run(
        session: s, cases: cases, questions: qs, offTopicInput: first.paths, askYesNo: true,
        progress: { log("chat \(key): \($0)") },
        onClosed: { c, a, right in
          var k = counts[c.set.name] ?? (0, 0, 0, 0)
          k.0 += 1
          if right { k.1 += 1 }
          if a.flags.isEmpty {
            k.2 += 1
            if !right { k.3 += 1 }
          }
          counts[c.set.name] = k
          let o: [String: Any] = [
            "model": key, "tile": c.paths.joined(separator: " "), "set": c.set.name, "truth": c.set.allClasses[c.truth].name,
            "judged_against": a.promptSet, "verdict": a.verdict, "answer": a.text, "flags": a.flags.map(\.reason),
            "correct": right,
          ]
          record(o)
        },
        onGeneral: { g, a, facts, contradicts in
          let o: [String: Any] = [
            "model": key, "question": g.q, "answer": a.text, "flags": a.flags.map(\.reason), "source": a.source ?? "",
            "states_key_facts": facts, "contradicts": contradicts,
          ]
          record(o)
        })
      bySet.append(counts)
      yesNo += r.yesNoRow(name) + "\n"
      metrics["chat_\(key)_yes_no_wrong_flagged"] = JSONValue(
        any: r.yesNoWrong == 0 ? 1 : Double(r.yesNoWrongFlagged) / Double(r.yesNoWrong))
      log("chat \(key): evaluated in \(String(format: "%.1f", r.seconds)) s")
      md += r.row(name) + "\n"
      metrics["chat_\(key)_closed_accuracy"] = JSONValue(any: Double(r.closedCorrect) / Double(max(1, r.closed)))
      metrics["chat_\(key)_contradictions_flagged"] = JSONValue(
        any: r.contradicting == 0 ? 1 : Double(r.contradictingFlagged) / Double(r.contradicting))
      metrics["chat_\(key)_unflagged_wrong"] = JSONValue(any: Double(r.unflaggedWrong) / Double(max(1, r.unflagged)))
      metrics["chat_\(key)_off_topic_without_diagnosis"] = JSONValue(
        any: Double(r.offTopicWithoutDiagnosis) / Double(max(1, r.offTopic)))
      metrics["chat_\(key)_general_key_facts"] = JSONValue(any: Double(r.generalFacts) / Double(max(1, r.general)))
      metrics["chat_\(key)_general_unflagged_wrong"] = JSONValue(
        any: Double(r.generalUnflaggedWrong) / Double(max(1, r.generalUnflagged)))
      if let (_, qs) = layQuestions {
        let l = try ChatEvaluation.run(
          session: s, cases: [], questions: ChatEvaluation.QuestionSet(questions: qs, off_topic: []),
          offTopicInput: first.paths,
          onGeneral: { g, a, facts, contradicts in
            let o: [String: Any] = [
              "model": key, "lay_question": g.q, "answer": a.text, "flags": a.flags.map(\.reason), "source": a.source ?? "",
              "states_key_facts": facts, "contradicts": contradicts,
            ]
            record(o)
          })
        let n = Double(max(1, l.general))
        func f3(_ x: Double) -> String { String(format: "%.3f", x) }
        let facts = f3(Double(l.generalFacts) / n), contra = f3(Double(l.generalContradicting) / n)
        let flagged = f3(Double(l.general - l.generalUnflagged) / n)
        let wrong =
          l.generalUnflagged == 0
          ? "- (0 unflagged)"
          : "\(f3(Double(l.generalUnflaggedWrong) / Double(l.generalUnflagged))) (\(l.generalUnflagged) unflagged)"
        lay += "| \(name) | \(facts) | \(contra) (\(l.general)) | \(flagged) | \(wrong) |\n"
        metrics["chat_\(key)_lay_key_facts"] = JSONValue(any: Double(l.generalFacts) / n)
        metrics["chat_\(key)_lay_unflagged_wrong"] = JSONValue(
          any: Double(l.generalUnflaggedWrong) / Double(max(1, l.generalUnflagged)))
      }
    }
    md +=
      "\n### Yes/no questions\n\nAfter each closed question, on the same tile: \"Is this malignant?\" and \"Is this benign?\" by turns (tiles whose label is benign or malignant). A yes or no against the label is wrong; it must be flagged. A language model's answer opens with the classifier's own yes or no, and goes on from there.\n\n| chat model | answered yes or no | against the label (n) | of those flagged | unflagged and wrong |\n|---|---|---|---|---|\n"
      + yesNo
    if setNames.count > 1 {
      md +=
        "\n### Closed questions by prompt set\n\nEach cell: accuracy of the answer's class, then the unflagged answers and how many of them are wrong.\n\n| prompt set (n) | "
        + rows.map(\.1).joined(separator: " | ") + " |\n|---|" + rows.map { _ in "---|" }.joined() + "\n"
      for sn in setNames {
        let n = bySet.first?[sn]?.0 ?? 0
        md += "| \(sn) (\(n)) | "
        md +=
          bySet.map { c in
            let (t, ok, u, w) = c[sn] ?? (0, 0, 0, 0)
            return String(format: "%.3f, %d unflagged (%d wrong)", Double(ok) / Double(max(1, t)), u, w)
          }.joined(separator: " | ") + " |\n"
      }
    }
    if let (files, qs) = layQuestions {
      md +=
        "\n### Questions worded unlike the notes\n\n\(qs.count) general questions in lay or roundabout words (\(files.map { "`\($0)`" }.joined(separator: ", ")); \"What is scarring inside an organ called?\"), each with its key facts, asked as above. Retrieval finds the right note less often for them (`eosin notes search --questions`), so what matters is that an answer drawn from the wrong note is flagged.\n\n| chat model | states the key facts | contradicts them (n) | flagged | unflagged answers missing a key fact (n) |\n|---|---|---|---|---|\n"
        + lay
    }
    // Retrieval alone: how often the first passage holds the key facts, for BM25 (chat's
    // default) and BM25 fused with the language model's hidden states (`--retrieval hybrid`).
    if let n = notes, let lm = rows.compactMap(\.2).first?.lm {
      let dense = try NoteEmbeddings(notes: n, lm: lm)
      var sets: [(String, [ChatEvaluation.GeneralQuestion])] = [(questionsFile, qs.questions)]
      if let (files, lq) = layQuestions { sets.append((files.joined(separator: ", "), lq)) }
      md +=
        "\n### Retrieval\n\nThe first passage chat retrieves for each general question (Eosin's notes, then the imported atlas lecture notes), scored by whether it holds every key fact (`eosin notes search --questions`). BM25 is chat's default; the fusion with the language model's hidden states (`--retrieval hybrid`) costs about 60 ms a question.\n\n| questions | n | BM25 | BM25 fused with \((lm.path as NSString).lastPathComponent) hidden states |\n|---|---|---|---|\n"
      for (name, q) in sets {
        let a = n.retrievalScore(q, dense: nil), b = n.retrievalScore(q, dense: dense)
        md += "| `\(name)` | \(q.count) | \(a.factsFirst) | \(b.factsFirst) |\n"
      }
    }
    if let f = answersFile { try Data(lines.utf8).write(to: URL(fileURLWithPath: f), options: .atomic) }
    return (md, metrics)
  }
}
