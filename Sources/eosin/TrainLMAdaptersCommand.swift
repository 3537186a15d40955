import ArgumentParser
import EosinModels
import EosinPipelines
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation

struct TrainLMAdaptersCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lm-adapters",
    abstract:
      "Second stage of the chat language model's training: low-rank adapters on its attention (the model itself frozen) and the slide-token projector of `train lm-projector`, trained on grounded chat turns built as chat builds them: slide questions on training tiles answered from the classifier's verdict and notes, questions about Eosin's notes answered from the retrieved passage, PathVQA text, and off-topic questions answered as the frozen model answers them."
  )

  @Option(help: "Weights folder holding clip/, decoder/ and lm-projector/ (from `train lm-projector`).") var weights =
    defaultWeights
  @Option(help: "The GGUF language model (default: the cached SmolLM2-135M-Instruct).") var lm: String?
  @Option(parsing: .upToNextOption, help: "Labelled tile folders for slide turns (their train split).")
  var data: [String] = defaultDiagnosticData
  @Option(parsing: .upToNextOption, help: "Prompt sets of a dataset folder, FOLDER=SET[,SET...] (its own set first).")
  var sets: [String] = []
  @Option(help: "PathVQA question-answer text (JSON lines).") var pathvqa = "../shared/data/text/pathvqa-qa.jsonl"
  @Option(help: "Training tiles per dataset for slide turns.") var tilesPerDataset = 240
  @Option(help: "PathVQA pairs in the pool.") var pathvqaPairs = 200
  @Option(help: "Optimizer steps.") var steps = 100
  @Option(help: "Turns per step.") var batch = 8
  @Option(help: "Adapter rank.") var rank = 8
  @Option(help: "Adapter alpha (the update is scaled by alpha / rank).") var alpha: Float = 16
  @Option(help: "Peak learning rate.") var lr: Float = 3e-4
  @Option(help: "Seed.") var seed: UInt64 = 1
  @Option(help: "Also write every turn of the pool here, one JSON line each (kind, system, user, lead, answer).") var turns:
    String?

  func run() throws {
    guard let path = lm ?? LanguageModel.Default.resolve(nil) else {
      throw CLIError("no language model: pass --lm FILE.gguf or run `make lm`")
    }
    let t0 = Probes.now()
    // The language model and the notes, without a projector: training starts from stage 1's.
    let (grounded, _) = try groundedLM(path)
    let lmSHA = try LanguageModel.Default.cachedSHA256(path)
    let bundle = try ModelBundle(path: weights)
    // The slide turns' verdicts and flags as chat gives them: with the prompts read through the
    // language model (finalize fits the review thresholds so, `--wording lm`).
    try readWordingThroughLM(bundle, lm: path, cacheDirectory: nil)
    let stage1 = weights + "/lm-projector/model.safetensors"
    guard FileManager.default.fileExists(atPath: stage1) else {
      throw CLIError("\(stage1): no slide-token projector; run `eosin train lm-projector --weights \(weights)` first")
    }
    let st = try SafeTensorsFile(path: stage1)
    guard st.metadata["language_model_sha256"] == lmSHA else {
      throw CLIError("\(stage1): the projector was trained for another language model than \(path)")
    }
    let hidden = st.tensors["mm_projector.0.weight"]?.shape.first ?? 0
    let projector = try Projector(
      file: st, inDim: bundle.clip.embedDim, hidden: hidden, outDim: grounded.lm.model.config.channels)
    guard let dd = bundle.decoderDirectory else { throw CLIError("\(weights): the weights have no decoder") }
    let chat = try ChatModel(directory: dd, imageDim: bundle.clip.embedDim)
    let table = try setsTable(sets)
    let know = LabeledTiles.knowledge(promptDirs("knowledge").first { FileManager.default.fileExists(atPath: $0) } ?? "")
    let (cases, sessionSets) = try ChatComparison.cases(
      try data.map { try finalizeDataset($0, sets: table) }, split: .train,
      stratified: bundle.manifest.splitsStratifiedByLabel, knowledge: know, perDataset: tilesPerDataset
    ) { try PromptSet.load($0, searchDirs: promptDirs("zero-shot")) }
    let session = ChatSession(bundle: bundle, chat: chat, promptSets: sessionSets, cacheDir: nil)
    let notes = grounded.notes
    let qfile =
      (promptDirs("eval").first { FileManager.default.fileExists(atPath: $0) } ?? "Prompts/eval") + "/general-questions.json"
    let evalQuestions = try ChatComparison.questions(qfile)
    let slide = try GroundedInstructions.slideExamples(session: session, cases: cases, notes: notes, seed: seed) { i, n in
      if i % 100 == 0 || i == n { warn("slide turns: \(i)/\(n) tiles") }
    }
    let offSession = ChatSession(bundle: bundle, chat: chat, promptSets: sessionSets, cacheDir: nil)
    let notesTurns = try GroundedInstructions.notesExamples(
      session: offSession, notes: notes, heldOutQuestions: evalQuestions.questions.map(\.q))
    let vqa = try GroundedInstructions.pathVQAExamples(
      file: pathvqa, session: offSession, notes: notes, count: pathvqaPairs, seed: seed)
    let off = try GroundedInstructions.offTopicExamples(session: offSession, notes: notes, lm: grounded.lm)
    warn(
      "pool: \(slide.count) slide turns, \(notesTurns.count) notes turns, \(vqa.count) PathVQA turns, \(off.count) off-topic turns (built in \(fmt((Probes.now() - t0) / 60, 1)) min)"
    )
    if let f = turns {
      var lines = ""
      for e in slide + notesTurns + vqa + off {
        let o = ["kind": e.kind, "system": e.system, "user": e.user, "lead": e.lead, "answer": e.answer]
        lines += String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self) + "\n"
      }
      try writeAtomically(Data(lines.utf8), to: f)
    }
    let pools: [(String, [GroundedExample], Double)] = [
      ("slide", slide, 0.55), ("notes", notesTurns, 0.2), ("pathvqa", vqa, 0.1), ("off-topic", off, 0.15),
    ].filter { !$0.1.isEmpty }
    guard !pools.isEmpty else { throw CLIError("no training turns could be built") }
    let totalShare = pools.reduce(0) { $0 + $1.2 }
    // Every turn of a step drawn by (seed, step, slot): a pool by its share, then a turn in it.
    func draw(_ step: Int, _ slot: Int, salt: UInt64 = 0) -> GroundedExample {
      var r = SeededRNG(seed: (seed &+ salt) &* 0x9E37_79B9 &+ UInt64(step * 64 + slot) &* 0x85EB_CA6B &+ 1)
      var u = Double(r.uniform()) * totalShare
      var pool = pools[pools.count - 1].1
      for p in pools {
        if u < p.2 {
          pool = p.1
          break
        }
        u -= p.2
      }
      return pool[Int(r.next() % UInt64(pool.count))]
    }
    let trainer = try LMAdapterTrainer(lm: grounded.lm, projector: projector, rank: rank, alpha: alpha, seed: seed)
    let probe = (0..<16).map { draw(0, $0, salt: 7919) }
    let before = try trainer.loss(probe)
    print(String(format: "probe loss before training %.4f (%d turns)", before, probe.count))
    let (done, curve) = try languageModelTrainingLoop(
      params: trainer.params, steps: steps, batch: batch, lr: lr, warmup: max(1, steps / 10), logEvery: 5, unit: "turns"
    ) { s in try trainer.step((0..<batch).map { draw(s, $0) }) }
    let after = try trainer.loss(probe)
    print(String(format: "probe loss after training %.4f", after))
    let out = weights + "/lm-adapters"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let meta = ["language_model_sha256": lmSHA]
    try SafeTensorsWriter.write(try trainer.exportProjector(), metadata: meta, to: out + "/projector.safetensors")
    try SafeTensorsWriter.write(
      try trainer.exportAdapters(), metadata: meta.merging(trainer.adapters.metadata) { a, _ in a },
      to: out + "/adapters.safetensors")
    let info: [String: Any] = [
      "command": invocation(), "seed": Int(seed), "steps": done, "batch": batch, "peak_lr": Double(lr), "rank": rank,
      "alpha": Double(alpha), "targets": "q_proj, v_proj of every block",
      "language_model": (path as NSString).lastPathComponent, "language_model_sha256": lmSHA,
      "initial_projector": "lm-projector/model.safetensors",
      "pool": Dictionary(uniqueKeysWithValues: pools.map { ($0.0, $0.1.count) }),
      "shares": Dictionary(uniqueKeysWithValues: pools.map { ($0.0, $0.2 / totalShare) }),
      "datasets": data.map { ($0 as NSString).lastPathComponent }, "held_out_notes_questions": qfile,
      "probe_loss_before": Double(before), "probe_loss_after": Double(after), "loss_every_5_steps": curve,
      "minutes": (Probes.now() - t0) / 60,
    ]
    try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]).write(
      to: URL(fileURLWithPath: out + "/training.json"), options: .atomic)
    // The manifest points chat at the stage-2 projector and the adapters.
    try recordInManifest(
      weights: weights, folder: "lm-adapters", files: ["projector.safetensors", "adapters.safetensors", "training.json"]
    ) { man in
      man.languageModel?.projector = "lm-adapters/projector.safetensors"
      man.languageModel?.adapters = "lm-adapters/adapters.safetensors"
    }
    print("trained the adapters and the projector in \(fmt((Probes.now() - t0) / 60, 1)) min -> \(out)")
  }
}
