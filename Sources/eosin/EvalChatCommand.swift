import ArgumentParser
import EosinPipelines
import EosinTraining
import Foundation

/// `eosin eval chat`: the chat-evaluation table of EVALUATION.md for any weights, on the split the
/// weights were trained with. Parses, calls ``ChatComparison``, prints the markdown.
struct EvalChat: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "chat",
    abstract:
      "Chat answers against the classifier: closed questions on labelled tiles, off-topic and general pathology questions, for the embedded decoder and the language model without and with slide tokens."
  )

  @OptionGroup var model: ModelOptions
  @Option(parsing: .upToNextOption, help: "Labelled tile folders (each judged against its own prompt set, as finalize knows it).")
  var data: [String] = defaultDiagnosticData
  @Option(parsing: .upToNextOption, help: "Prompt sets of a dataset folder, FOLDER=SET[,SET...] (its own set first).")
  var sets: [String] = []
  @Option(help: "Split to ask about (train, val, test), by the rule the weights were trained with.") var split = "test"
  @Option(help: "Tiles asked about per dataset (every n-th).") var perDataset = 30
  @Option(help: "Language model (GGUF; none: only the embedded decoder; default: $EOSIN_LM or the fetched SmolLM2).")
  var lm: String?
  @Option(help: "Also write the markdown section here.") var out: String?
  @Option(help: "Write every closed-question answer here, one JSON line each (model, tile, truth, verdict, answer, flags).")
  var answers: String?

  @Option(help: "How the language model's questions find Eosin's notes: bm25, or hybrid (fused with its hidden states).")
  var retrieval: Retrieval = .bm25
  @Option(
    parsing: .upToNextOption,
    help:
      "Questions worded unlike the notes, for their own table (default: Prompts/eval/paraphrase-questions*.json; none: leave it out)."
  )
  var layQuestions: [String] = []
  @Option(help: "General and off-topic questions with key facts (default: Prompts/eval/general-questions.json).")
  var questions: String?

  func run() throws {
    guard let sp = Split(rawValue: split) else { throw ValidationError("--split must be train, val or test") }
    let table = try setsTable(sets)
    let bundle = try model.bundle()
    guard let dd = bundle.decoderDirectory else {
      throw CLIError("\(model.weights ?? ModelBundle.defaultPath()): the weights have no decoder")
    }
    let chat = try ChatModel(directory: dd, imageDim: bundle.clip.embedDim)
    let know = LabeledTiles.knowledge(promptDirs("knowledge").first { FileManager.default.fileExists(atPath: $0) } ?? "")
    let (cases, chosen) = try ChatComparison.cases(
      try data.map { try finalizeDataset($0, sets: table) }, split: sp, stratified: bundle.manifest.splitsStratifiedByLabel,
      knowledge: know, perDataset: perDataset
    ) { try PromptSet.load($0, searchDirs: promptDirs("zero-shot")) }
    let qfile =
      questions
      ?? (promptDirs("eval").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/eval") + "/general-questions.json"
    let notes = try chatNotes()
    var cmp = ChatComparison(
      bundle: bundle, chat: chat, languageModel: LanguageModel.Default.resolve(lm),
      questions: try ChatComparison.questions(qfile),
      makeGrounded: { try groundedLM($0, bundle: $1, notes: notes, retrieval: retrieval).0 },
      log: warn)
    cmp.answersFile = answers
    cmp.notes = notes
    if let q = questions { cmp.questionsFile = q }
    let evalDir = promptDirs("eval").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/eval"
    let lay =
      layQuestions.isEmpty
      ? ["paraphrase-questions.json", "paraphrase-questions-test.json"].map { evalDir + "/" + $0 }.filter {
        FileManager.default.fileExists(atPath: $0)
      } : layQuestions.filter { $0 != "none" }
    if !lay.isEmpty { cmp.layQuestions = (lay, try ChatComparison.generalQuestions(lay)) }
    let (md, _) = try cmp.run(cases: cases, sets: chosen, split: split)
    if let o = out { try writeAtomically(Data(md.utf8), to: o) }
    print(md)
  }
}
