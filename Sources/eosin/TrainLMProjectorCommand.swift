import ArgumentParser
import EosinModels
import EosinPipelines
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation

struct TrainLMProjectorCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "lm-projector",
    abstract:
      "Train the slide-token projector for the chat language model (SmolLM2 by default), the language model frozen: CLIP tile embeddings become slide tokens in the user turn, and the answers of instruction pairs built from the labels and the knowledge notes are the targets."
  )

  @Option(help: "Weights folder holding clip/ (its image embeddings become slide tokens).") var weights = defaultWeights
  @Option(help: "The GGUF language model (default: the cached SmolLM2-135M-Instruct).") var lm: String?
  @Option(parsing: .upToNextOption, help: "Labelled tile datasets.")
  var data: [String] = defaultDiagnosticData
  @Option(help: "Knowledge notes folder.") var knowledge = "Prompts/knowledge"
  @Option(help: "Slides whose background tiles become non-tissue examples.") var backgroundSlide: [String] = []
  @Option(help: "Optimizer steps.") var steps = 200
  @Option(help: "Conversations per step.") var batch = 8
  @Option(help: "Projector hidden width.") var hidden = 1024
  @Option(help: "Peak learning rate.") var lr: Float = 1e-3
  @Option(help: "Seed.") var seed: UInt64 = 1

  func run() throws {
    guard let path = lm ?? LanguageModel.Default.resolve(nil) else {
      throw CLIError("no language model: pass --lm FILE.gguf or run `make lm`")
    }
    let model = try LanguageModel(path: path)
    let lmSHA = try LanguageModel.Default.cachedSHA256(path)
    let bundle = try ModelBundle(path: weights)
    let classes = try Knowledge.load(knowledge)
    let inst = try InstructionData.collect(
      data: data, bundle: bundle, classes: classes, backgroundSlides: backgroundSlide, seed: seed)
    let D = bundle.clip.embedDim
    var sampler = try InstructionSampler(
      embeddings: inst.embeddings, labels: inst.labels, groups: inst.groups, nonTissue: inst.nonTissue,
      nonTissueClass: inst.nonTissueClass, classes: classes, dim: D, tokenizer: bundle.tokenizer)
    sampler.seed = seed
    let trainer = try LMProjectorTrainer(lm: model, imageDim: D, hidden: hidden, seed: seed)
    // A fixed probe set (drawn with another seed from the same tiles) shows the loss falling.
    var probeSampler = sampler
    probeSampler.seed = seed &+ 7919
    let probe = (0..<16).map { probeSampler.conversation(step: 0, slot: $0) }
    let before = try trainer.loss(probe)
    print(String(format: "probe loss before training %.4f (%d conversations)", before, probe.count))
    let t0 = Probes.now()
    let (done, curve) = try languageModelTrainingLoop(
      params: trainer.params, steps: steps, batch: batch, lr: lr, warmup: max(1, steps / 20), logEvery: 10, unit: "conversations"
    ) { s in try trainer.step((0..<batch).map { sampler.conversation(step: s, slot: $0) }) }
    let after = try trainer.loss(probe)
    print(String(format: "probe loss after training %.4f", after))
    let out = weights + "/lm-projector"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    try SafeTensorsWriter.write(trainer.export(), metadata: ["language_model_sha256": lmSHA], to: out + "/model.safetensors")
    let info: [String: Any] = [
      "command": invocation(), "seed": Int(seed), "steps": done, "batch": batch, "peak_lr": Double(lr),
      "language_model": (path as NSString).lastPathComponent, "language_model_sha256": lmSHA,
      "projector": ["in": D, "hidden": hidden, "out": model.model.config.channels],
      "slide_tokens": sampler.tileTokens + 1, "instruction_tiles": inst.labels.count,
      "non_tissue_images": inst.nonTissueCount, "datasets": data.map { ($0 as NSString).lastPathComponent },
      "probe_loss_before": Double(before), "probe_loss_after": Double(after), "loss_every_10_steps": curve,
      "minutes": (Probes.now() - t0) / 60,
    ]
    try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]).write(
      to: URL(fileURLWithPath: out + "/training.json"), options: .atomic)
    // Adapters trained with an earlier projector no longer apply: they go.
    let stale = weights + "/lm-adapters"
    if FileManager.default.fileExists(atPath: stale) {
      try FileManager.default.removeItem(atPath: stale)
      warn("removed \(stale): its adapters were trained with the previous projector; run `eosin train lm-adapters` again")
    }
    // The manifest names the projector and pins the language model it was trained for.
    try recordInManifest(weights: weights, folder: "lm-projector", files: ["model.safetensors", "training.json"]) { man in
      if let pinned = man.languageModel?.sha256, pinned != lmSHA {
        warn(
          "the manifest pins another language model (\(pinned.prefix(12))…); the projector applies only to \((path as NSString).lastPathComponent) (\(lmSHA.prefix(12))…), as its metadata records"
        )
      }
      man.languageModel?.projector = "lm-projector/model.safetensors"
      man.languageModel?.adapters = nil
    }
    print("trained the slide-token projector in \(fmt((Probes.now() - t0) / 60, 1)) min -> \(out)")
  }
}

/// The AdamW loop of the language-model trainers: zeroed gradients, one step on `batch`
/// examples (`step` returns its loss), warmup then cosine decay, a loss line every `logEvery`
/// steps; Ctrl-C stops it after the current step.
/// - Returns: the steps done and the mean loss of each `logEvery` steps.
func languageModelTrainingLoop(
  params: ParameterSet, steps: Int, batch: Int, lr: Float, warmup: Int, logEvery: Int, unit: String,
  step: (Int) throws -> Float
) throws -> (done: Int, curve: [Double]) {
  signal(SIGINT) { _ in interrupted = true }
  let t0 = Probes.now()
  var losses: [Float] = [], curve: [Double] = []
  var done = 0
  for s in 0..<steps {
    if interrupted { break }
    params.zeroGrad()
    losses.append(try step(s))
    let rate = learningRate(step: s, total: steps, warmup: warmup, peak: lr)
    _ = params.adamw(lr: rate, weightDecay: 0, clip: 1)
    done = s + 1
    if done % logEvery == 0 || done == steps {
      let m = losses.reduce(0, +) / Float(losses.count)
      curve.append(Double(m))
      print(
        String(
          format: "step %4d/%d  loss %.4f  lr %.2e  %.2f " + unit + "/s", done, steps, m, rate,
          Double(done * batch) / (Probes.now() - t0)))
      fflush(stdout)
      losses.removeAll()
    }
  }
  return (done, curve)
}

/// Records `files` of `weights/folder` (sha256 and size) in the weights manifest after `edit`,
/// replacing the manifest atomically. Weights that have no manifest yet (`make weights` trains
/// every part before `eosin train finalize` writes it) are left as they are: finalize records
/// every file it finds.
func recordInManifest(weights: String, folder: String, files: [String], edit: (inout WeightsManifest) -> Void) throws {
  let manPath = weights + "/manifest.json"
  guard FileManager.default.fileExists(atPath: manPath) else { return }
  var man = try WeightsManifest.load(manPath)
  edit(&man)
  for f in files {
    let p = weights + "/" + folder + "/" + f
    let size = (try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? 0
    man.files[folder + "/" + f] = .init(sha256: try SHA256.hex(fileAt: p), bytes: size)
  }
  let tmp = manPath + ".tmp"
  try man.encoded().write(to: URL(fileURLWithPath: tmp))
  guard rename(tmp, manPath) == 0 else { throw CLIError("\(manPath): cannot write") }
}
