import ArgumentParser
import EosinModels
import EosinTensor
import EosinTraining
import EosinWeights
import Foundation

struct TrainCLIPAlignCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "clip-align",
    abstract: "Fit the image tower's projections to the frozen text tower after `train clip` (head alignment).",
    discussion: """
      Every class competes in every example: each class's anchor is the mean text embedding of its training \
      captions (never the prompt sets' held-out wording), and the image head (visual_projection and the \
      tissue-statistics projection) minimises cross-entropy against the anchors over augmented training draws, \
      pulled towards its contrastive weights. The backbone and the text tower stay frozen. The head with the best \
      mean validation balanced accuracy is kept (possibly the unchanged one). Reads OUT/train-state.safetensors, \
      which it never changes, so running it again gives the same result; writes OUT/model.safetensors and an \
      "alignment" entry in OUT/training.json.
      """)

  @OptionGroup var dataOptions: CLIPDataOptions
  @Option(help: "The trained CLIP folder (config.json, train-state.safetensors).") var out = "\(defaultWeights)/clip"
  @Option(help: "Augmented training draws to fit on.") var draws = 8192
  @Option(help: "Full-batch epochs.") var epochs = 400
  @Option(help: "Adam learning rate.") var lr: Float = 2e-3
  @Option(help: "L2 pull towards the contrastive head.") var pull: Float = 1e-2
  @Option(help: "Seed for the draws and their augmentation.") var seed: UInt64 = 1
  @Option(
    help: ArgumentHelp(
      "Write what a head could be fitted on (training draws' and val tiles' backbone and tissue rows, anchors, the current head) to this safetensors file, and fit nothing. Uses OUT/model.safetensors when there is no training state.",
      valueName: "file")) var featuresOut: String?
  @Option(help: "With --features-out: the split whose tiles stand in for val (val or test).") var featuresSplit = "val"

  func run() throws {
    let state = out + "/train-state.safetensors"
    let hasState = FileManager.default.fileExists(atPath: state)
    guard hasState || featuresOut != nil else {
      throw CLIError("\(state): no training state; run `eosin train clip --out \(out)` first")
    }
    let base: CLIPModel
    do { base = try CLIPModel(checkpoint: try Checkpoint(path: out)) } catch {
      throw CLIError("\(out): not a CLIP checkpoint: \(error.localizedDescription)")
    }
    let model = try TrainCLIP(model: base)
    if hasState {
      do { try model.params.load(from: SafeTensorsFile(path: state)) } catch {
        throw CLIError("\(state): does not match \(out)/config.json: \(error.localizedDescription)")
      }
    }
    let S = model.config.visionConfig.imageSize
    guard let heldOut = Split(rawValue: featuresSplit), heldOut != .train, featuresOut != nil || heldOut == .val else {
      throw ValidationError("--features-split must be val or test, and test only with --features-out")
    }
    let set = try dataOptions.load(imageSize: S, syntheticNonTissue: 240, seed: seed, validation: true, heldOutSplit: heldOut)
    var tc = CLIPTrainConfig()
    tc.seed = seed
    let trainer = try CLIPTrainer(
      model: model, images: set.images, labels: set.labels, weights: set.weights, nonTissue: set.nonTissue,
      nonTissueClass: set.nonTissueClass, captions: CaptionBuilder(classes: set.classes, heldOutSynonyms: set.heldOut),
      tokenizer: set.tokenizer, config: tc)
    var ac = CLIPAlignConfig()
    ac.draws = draws
    ac.epochs = epochs
    ac.lr = lr
    ac.pull = pull
    ac.seed = seed
    let aligner = CLIPHeadAligner(trainer: trainer, validation: set.validation, config: ac)
    if let path = featuresOut {
      let (tensors, metadata) = try aligner.features()
      try SafeTensorsWriter.write(tensors, metadata: metadata, to: path)  // atomic
      print(
        "wrote \(tensors["train_rows"]!.shape[0]) training draws and \(set.validation.count) \(heldOut.rawValue) tiles to \(path)"
      )
      return
    }
    let report = try aligner.run {
      print($0)
      fflush(stdout)
    }
    try SafeTensorsWriter.write(model.export(), metadata: ["format": "pt"], to: out + "/model.safetensors")
    var info =
      (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/training.json"))))
      as? [String: Any] ?? [:]
    let r = try JSONSerialization.jsonObject(with: JSONEncoder().encode(report))
    info["alignment"] = [
      "command": invocation(), "config": try JSONSerialization.jsonObject(with: JSONEncoder().encode(ac)), "result": r,
    ]
    try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]).write(
      to: URL(fileURLWithPath: out + "/training.json"), options: .atomic)
    let names = report.valAfter.keys.sorted()
    for n in names {
      print(String(format: "%@  val balanced accuracy %.3f -> %.3f", n, report.valBefore[n] ?? 0, report.valAfter[n] ?? 0))
    }
    print(
      "kept epoch \(report.bestEpoch) of \(epochs) (\(report.draws) draws, \(report.classes) classes) in \(fmt(report.seconds / 60, 1)) min -> \(out)/model.safetensors"
    )
  }
}
