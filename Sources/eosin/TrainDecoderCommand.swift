import ArgumentParser
import EosinModels
import EosinPipelines
import EosinSlide
import EosinTensor
import EosinTokenizer
import EosinTraining
import EosinWeights
import Foundation

struct TrainDecoderCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "decoder",
    abstract:
      "Train the decoder: language pretraining on pathology text, then instruction tuning on (slide tokens, question, answer) with the projector."
  )

  @Option(parsing: .upToNextOption, help: "Text corpora for pretraining.") var corpus: [String] = [
    "../shared/data/text", "Prompts/knowledge",
  ]
  @Option(parsing: .upToNextOption, help: "Labelled tile datasets for instruction tuning.")
  var data: [String] = defaultDiagnosticData
  @Option(help: "Weights folder holding the trained clip/ (its image embeddings become slide tokens).") var weights =
    defaultWeights
  @Option(help: "Knowledge notes folder.") var knowledge = "Prompts/knowledge"
  @Option(help: "Slides whose background tiles become non-tissue examples.") var backgroundSlide: [String] = []
  @Option(help: "Pretraining steps (batch 32 x 64 tokens).") var pretrainSteps = 1200
  @Option(help: "Instruction-tuning steps (batch 32).") var instructSteps = 1200
  @Option(help: "Seed.") var seed: UInt64 = 1

  func run() throws {
    let bundle = try ModelBundle(path: weights)
    let tok = bundle.tokenizer
    guard let eos = tok.eos else { throw CLIError("tokenizer has no <|endoftext|>") }
    let classes = try Knowledge.load(knowledge)
    // Text: 95% for training, 5% held out by hash.
    var texts: [String] = []
    for c in corpus {
      var isDir: ObjCBool = false
      guard FileManager.default.fileExists(atPath: c, isDirectory: &isDir) else {
        throw CLIError("\(c): no such file or directory")
      }
      let files =
        isDir.boolValue ? (((try? FileManager.default.contentsOfDirectory(atPath: c)) ?? []).sorted().map { c + "/" + $0 }) : [c]
      for f in files where ["json", "csv", "txt"].contains((f as NSString).pathExtension) { texts += try TextCorpus.read(f) }
    }
    var trainStream: [Int32] = [], heldStream: [Int32] = []
    for t in texts {
      let ids = tok.encode(t) + [eos]
      if TileManifest.split(dataset: "text", group: t) == .test && heldStream.count < 60_000 {
        heldStream += ids
      } else {
        trainStream += ids
      }
    }
    warn("pretraining corpus: \(texts.count) texts, \(trainStream.count) tokens (\(heldStream.count) held out)")
    var cfg = GPT2Config()
    cfg.vocabSize = tok.vocabSize
    cfg.nEmbd = 256
    cfg.nLayer = 4
    cfg.nHead = 4
    cfg.nPositions = 96
    cfg.bosTokenId = Int(eos)
    cfg.eosTokenId = Int(eos)
    let D = bundle.clip.embedDim
    let model = try TrainGPT(config: cfg, imageDim: D, projectorHidden: 512, seed: seed)
    let trainer = DecoderTrainer(model: model)
    trainer.seed = seed
    signal(SIGINT) { _ in interrupted = true }
    let t0 = Probes.now()
    let before = trainer.heldOutLoss(stream: heldStream, windows: 64, length: 64)
    trainer.pretrain(
      stream: trainStream, steps: pretrainSteps, batch: 32, length: 64,
      log: {
        print($0); fflush(stdout)
      }, stop: { interrupted })
    let after = trainer.heldOutLoss(stream: heldStream, windows: 64, length: 64)
    print(String(format: "held-out perplexity %.1f -> %.1f after pretraining", expf(before), expf(after)))
    // Instruction data: CLIP embeddings of training tiles and non-tissue images.
    let inst = try InstructionData.collect(
      data: data, bundle: bundle, classes: classes, backgroundSlides: backgroundSlide, seed: seed)
    let (emb, labels, groups, ntEmb, nt) = (inst.embeddings, inst.labels, inst.groups, inst.nonTissue, inst.nonTissueClass)
    var sampler = try InstructionSampler(
      embeddings: emb, labels: labels, groups: groups, nonTissue: ntEmb, nonTissueClass: nt, classes: classes, dim: D,
      tokenizer: tok)
    sampler.seed = seed
    let P = sampler.tileTokens + 1
    let types = Instructions.questionTypes
    trainer.instruct(
      steps: instructSteps, batch: 32, prefixLength: P, make: { sampler.example(step: $0, slot: $1) },
      log: {
        print($0); fflush(stdout)
      }, stop: { interrupted })
    // Save.
    let out = weights + "/decoder"
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let (dec, proj) = model.export()
    try SafeTensorsWriter.write(dec, metadata: ["format": "pt"], to: out + "/model.safetensors")
    try SafeTensorsWriter.write(proj, to: out + "/projector.safetensors")
    try writeJSON(cfg, to: out + "/config.json")
    for f in ["vocab.json", "merges.txt", "special_tokens.json"] {
      try? FileManager.default.removeItem(atPath: out + "/" + f)
      try FileManager.default.copyItem(atPath: bundle.directory + "/clip/" + f, toPath: out + "/" + f)
    }
    let info: [String: Any] = [
      "command": invocation(), "seed": Int(seed), "pretrain_steps": pretrainSteps,
      "instruct_steps": instructSteps,
      "pretrain_tokens": trainStream.count, "held_out_tokens": heldStream.count,
      "held_out_perplexity_before": Double(expf(before)),
      "held_out_perplexity_after_pretraining": Double(expf(after)), "instruction_tiles": labels.count,
      "non_tissue_images": inst.nonTissueCount,
      "question_types": types, "prefix_tokens": P,
      "pseudo_slide_tiles": [sampler.pseudoSlideTiles.lowerBound, sampler.pseudoSlideTiles.upperBound],
      "pseudo_slide_share": Double(sampler.pseudoSlideShare), "non_tissue_share": Double(sampler.nonTissueShare),
      "projector": ["in": D, "hidden": 512, "out": cfg.nEmbd],
      "minutes": (Probes.now() - t0) / 60,
      "held_out_perplexity_final": Double(expf(trainer.heldOutLoss(stream: heldStream, windows: 64, length: 64))),
    ]
    try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]).write(
      to: URL(fileURLWithPath: out + "/training.json"), options: .atomic)
    print("trained decoder in \(fmt((Probes.now() - t0) / 60, 1)) min -> \(out)")
  }
}

/// The instruction-tuning inputs shared by `train decoder` and `train lm-projector`: CLIP
/// embeddings of the training split's labelled tiles (with their knowledge class and group) and
/// of non-tissue images (blank, noise, blur, and a slide's background tiles).
struct InstructionData {
  var embeddings: [Float]
  var labels: [Int]
  var groups: [String]
  var nonTissue: [Float]
  var nonTissueCount: Int
  var nonTissueClass: Int

  static func collect(data: [String], bundle: ModelBundle, classes: [KnowledgeClass], backgroundSlides: [String], seed: UInt64)
    throws -> InstructionData
  {
    var index: [String: Int] = [:]
    for (i, c) in classes.enumerated() { index[c.datasetLabel] = i }
    guard let nt = classes.firstIndex(where: { $0.id == "non_tissue" }) else {
      throw CLIError("the knowledge notes have no non_tissue class")
    }
    var items: [TileItem] = []
    for d in data {
      let name = (d as NSString).lastPathComponent
      let (it, _) = try TileManifest.load(d, dataset: name)
      let splits = TileManifest.splits(dataset: name, groups: it.map(\.group), labels: it.map(\.label))
      items += it.filter { splits[$0.group] == .train && index[$0.label] != nil }
    }
    warn("embedding \(items.count) training tiles with the CLIP image encoder ...")
    var emb: [Float] = [], labels: [Int] = [], groups: [String] = []
    var k = 0
    while k < items.count {
      let chunk = items[k..<min(items.count, k + 64)]
      var imgs: [RGBImage] = []
      for it in chunk {
        if let im = try? ImageCodec.read(it.path) {
          imgs.append(im)
          labels.append(index[it.label]!)
          groups.append(it.dataset + "/" + it.group)
        }
      }
      emb += SlideIndex.embedImages(imgs, bundle: bundle)
      k += chunk.count
    }
    var rng = SeededRNG(seed: seed ^ 0x5EED)
    var ntImgs: [RGBImage] = (0..<200).map { i in
      let r = NonTissue.make(kind: i, size: 224, rng: &rng, blurSource: nil)
      return RGBImage(width: 224, height: 224, pixels: r.pixels)
    }
    for s in backgroundSlides {
      let s0 = try Slide(path: s)
      let m = try TissueDetector().detect(s0)
      let t = try Tiler(slide: s0, mpp: 0.5, tileSize: 224, tissue: nil, minTissue: 0)
      for ref in t.grid.tiles
      where m.fraction(x0: Double(ref.x), y0: Double(ref.y), width: t.grid.extent0, height: t.grid.extent0) == 0 {
        ntImgs.append(try t.read(ref))
      }
    }
    return InstructionData(
      embeddings: emb, labels: labels, groups: groups, nonTissue: SlideIndex.embedImages(ntImgs, bundle: bundle),
      nonTissueCount: ntImgs.count, nonTissueClass: nt)
  }
}
