import ArgumentParser
import EosinModels
import EosinSlide
import EosinTensor
import EosinTokenizer
import EosinTraining
import EosinWeights
import Foundation

/// Set by SIGINT during training; the loop saves a checkpoint and stops.
nonisolated(unsafe) var interrupted = false

struct TrainCLIPCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "clip",
    abstract: "Train the CLIP pair (ViT image encoder + text transformer) on labelled tiles, natively on the CPU.")

  @OptionGroup var dataOptions: CLIPDataOptions
  @Option(help: "Output folder for the checkpoint.") var out = "\(defaultWeights)/clip"
  @Option(help: "Optimizer steps.") var steps = 2000
  @Option(help: "Images per step.") var batch = 64
  @Option(help: "Peak learning rate.") var lr: Float = 5e-4
  @Option(help: "Seed for initialisation, shuffling and augmentation.") var seed: UInt64 = 1
  @Flag(help: "Continue from OUT/train-state.safetensors.") var resume = false
  @Option(help: "Transformer width of both towers.") var width = 192
  @Option(help: "Vision layers.") var visionLayers = 6
  @Option(help: "Text layers.") var textLayers = 4
  @Option(help: "Attention heads.") var heads = 3
  @Option(help: "Embedding dimension of the shared space.") var embedDim = 128
  @Option(help: "Synthetic non-tissue images to add.") var syntheticNonTissue = 240
  @Option(help: "Input size of the image tower in pixels (a multiple of 16).") var imageSize = 160
  @Flag(
    inversion: .prefixedNo,
    help: ArgumentHelp(
      "Add the fixed stain and texture statistics branch to the image tower.",
      discussion:
        "123 colour-deconvolution, histogram, local-binary-pattern and gradient statistics per tile, standardised on the training draws and mapped linearly into the shared space."
    )) var tissueFeatures = true

  func run() throws {
    guard imageSize >= 32, imageSize % 16 == 0 else {
      throw CLIError("--image-size \(imageSize): must be a multiple of 16, at least 32")
    }
    let set = try dataOptions.load(imageSize: imageSize, syntheticNonTissue: syntheticNonTissue, seed: seed)
    let (classes, ntClass, tok, heldOut) = (set.classes, set.nonTissueClass, set.tokenizer, set.heldOut)
    let (images, labels, weights, nonTissue) = (set.images, set.labels, set.weights, set.nonTissue)
    let (splitCounts, share) = (set.splitCounts, set.share)
    // Model.
    let cfg = CLIPConfig.eosin(
      vocabSize: tok.vocabSize, eos: Int(tok.eos!), width: width, visionLayers: visionLayers, textLayers: textLayers,
      heads: heads, embedDim: embedDim, imageSize: imageSize, tissueFeatures: tissueFeatures)
    let model = try TrainCLIP(config: cfg, seed: seed)
    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
    let state = out + "/train-state.safetensors"
    if resume {
      try model.params.load(from: SafeTensorsFile(path: state))
      warn("resumed at step \(model.params.step)")
    }
    var tc = CLIPTrainConfig()
    tc.steps = steps
    tc.batch = batch
    tc.peakLR = lr
    tc.seed = seed
    tc.warmup = max(1, min(100, steps / 10))
    tc.checkpointEvery = max(1, min(100, steps / 5))
    let captions = CaptionBuilder(classes: classes, heldOutSynonyms: heldOut)
    let trainer = try CLIPTrainer(
      model: model, images: images, labels: labels, weights: weights, nonTissue: nonTissue, nonTissueClass: ntClass,
      captions: captions, tokenizer: tok, config: tc)
    signal(SIGINT) { _ in interrupted = true }
    let t0 = Probes.now()
    try trainer.run(
      stop: { interrupted },
      log: {
        print($0); fflush(stdout)
      },
      save: { step in
        try SafeTensorsWriter.write(model.params.stateTensors(), metadata: ["step": "\(step)"], to: state)
        try SafeTensorsWriter.write(model.export(), metadata: ["format": "pt"], to: out + "/model.safetensors")
        try writeJSON(cfg, to: out + "/config.json")
        let pre: [String: Any] = [
          "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
          "size": ["shortest_edge": imageSize], "crop_size": ["height": imageSize, "width": imageSize],
        ]
        try JSONSerialization.data(withJSONObject: pre, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]).write(
          to: URL(fileURLWithPath: out + "/preprocessor_config.json"), options: .atomic)
        let info: [String: Any] = [
          "command": invocation(), "seed": Int(seed), "steps": step, "batch": batch,
          "peak_lr": lr, "image_size": imageSize, "dataset_share": share, "augmentation": augmentationSummary,
          "train_tiles": images.count, "non_tissue_images": nonTissue.count, "splits": splitCounts,
          "split_rule":
            splitRule,
          "held_out_synonyms": heldOut.sorted(), "training_templates": CaptionBuilder.trainingTemplates,
          // The names the text tower is trained on (classes with training images, and the
          // non-tissue class): the vocabulary `finalize --wording lm` reads prompts onto.
          "caption_names": Array(Set(Set(labels + [ntClass]).flatMap { captions.names($0) })).sorted(),
          "minutes": (Probes.now() - t0) / 60,
        ]
        try JSONSerialization.data(withJSONObject: info, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]).write(
          to: URL(fileURLWithPath: out + "/training.json"), options: .atomic)
      })
    if interrupted { throw ExitCode(130) }
    print("trained \(model.params.step) steps in \(fmt((Probes.now() - t0) / 60, 1)) min -> \(out)")
  }
}

/// The training data options `train clip` and `train clip-align` share.
struct CLIPDataOptions: ParsableArguments {
  @Option(
    parsing: .upToNextOption,
    help: "Diagnostic dataset folders, each with manifest.csv (path,label,group|case_id); each gets an equal share of the draws.")
  var data: [String] = defaultDiagnosticData
  @Option(
    parsing: .upToNextOption,
    help:
      "Small organ-recognition sets (captioned by organ or tissue, not diagnostic classes); together they get --organ-share of the draws."
  )
  var organData: [String] = defaultOrganData
  @Option(help: "Share of the tissue draws that go to the --organ-data sets together.") var organShare = 0.12
  @Option(help: "Knowledge notes folder.") var knowledge = "Prompts/knowledge"
  @Option(help: "Zero-shot prompt sets whose synonyms are held out of training.") var prompts = "Prompts/zero-shot"
  @Option(help: "Vocabulary folder.") var vocab = "Vocab"
  @Option(help: "Slides whose background tiles become non-tissue examples.") var backgroundSlide: [String] = []

  /// The training set these options name (``CLIPTrainingData/load``).
  /// - Parameter heldOutSplit: the split of the diagnostic sets loaded as `validation` (val; test only
  ///   for experiments that score on it).
  func load(
    imageSize: Int, syntheticNonTissue: Int, seed: UInt64, validation: Bool = false, heldOutSplit: Split = .val
  ) throws -> CLIPTrainingData {
    try CLIPTrainingData.load(
      data: data, organData: organData, organShare: organShare, knowledge: knowledge, prompts: prompts, vocab: vocab,
      backgroundSlides: backgroundSlide, imageSize: imageSize, syntheticNonTissue: syntheticNonTissue, seed: seed,
      validation: validation, heldOutSplit: heldOutSplit)
  }
}

/// The contrastive training set as `eosin train clip` builds it: knowledge classes, the
/// held-out prompt wording, decoded train-split tiles with organ- and class-balanced weights,
/// non-tissue images, and (when asked) the decoded val-split tiles.
struct CLIPTrainingData {
  var classes: [KnowledgeClass]
  var nonTissueClass: Int
  var tokenizer: Tokenizer
  var heldOut: Set<String>
  var images: [RawImage] = []
  var labels: [Int] = []
  var sources: [String] = []
  var weights: [Double] = []
  var nonTissue: [RawImage] = []
  var splitCounts: [String: [String: Int]] = [:]
  var share: [String: Double] = [:]
  /// Val-split tiles of the diagnostic sets (only with `validation`).
  var validation: [(dataset: String, image: RawImage, label: Int)] = []

  static func load(
    data: [String], organData: [String], organShare: Double, knowledge: String, prompts: String, vocab: String,
    backgroundSlides: [String], imageSize: Int, syntheticNonTissue: Int, seed: UInt64, validation: Bool = false,
    heldOutSplit: Split = .val
  ) throws -> CLIPTrainingData {
    let classes = try Knowledge.load(knowledge)
    var index: [String: Int] = [:]
    for (i, c) in classes.enumerated() { index[c.datasetLabel] = i }
    guard let ntClass = classes.firstIndex(where: { $0.id == "non_tissue" }) else {
      throw CLIError("\(knowledge): no non_tissue class")
    }
    let tok = try Tokenizer.load(vocab)
    // Held-out wording: every synonym a prompt set uses.
    let heldOut = promptSynonyms(prompts)
    var out = CLIPTrainingData(classes: classes, nonTissueClass: ntClass, tokenizer: tok, heldOut: heldOut)
    // Load and split.
    var train: [TileItem] = [], val: [TileItem] = []
    let diagnostic = Set(data.map { ($0 as NSString).lastPathComponent })
    for d in data + organData {
      let name = (d as NSString).lastPathComponent
      let (items, skipped) = try TileManifest.load(d, dataset: name)
      for s in skipped { warn("eosin: warning: skipped \(s)") }
      if !skipped.isEmpty { warn("eosin: warning: \(skipped.count) manifest rows skipped in \(d)") }
      let splits = TileManifest.splits(dataset: name, groups: items.map(\.group), labels: items.map(\.label))
      for it in items {
        let sp = splits[it.group]!
        out.splitCounts[name, default: [:]][sp.rawValue, default: 0] += 1
        guard sp == .train || (validation && sp == heldOutSplit && diagnostic.contains(name)) else { continue }
        guard index[it.label] != nil else { throw CLIError("\(d): label '\(it.label)' has no knowledge class (dataset_label)") }
        if sp == .train { train.append(it) } else { val.append(it) }
      }
    }
    // Decoded a little larger than the input, so random crops keep detail.
    let size = imageSize * 5 / 4
    warn("decoding \(train.count) training tiles\(validation ? " and \(val.count) \(heldOutSplit.rawValue) tiles" : "") ...")
    let (imgs, bad) = decodeTiles((train + val).map { $0.path }, size: size)
    for (i, im) in imgs.enumerated() {
      guard let im = im else { continue }
      if i < train.count {
        out.images.append(im)
        out.labels.append(index[train[i].label]!)
        out.sources.append(train[i].dataset)
      } else {
        let it = val[i - train.count]
        out.validation.append((it.dataset, im, index[it.label]!))
      }
    }
    // Every diagnostic set an equal share; the organ sets `organShare` together.
    let organ = Set(organData.map { ($0 as NSString).lastPathComponent }).subtracting(diagnostic)
    for d in diagnostic { out.share[d] = (organ.isEmpty ? 1 : 1 - organShare) / Double(diagnostic.count) }
    for d in organ { out.share[d] = (diagnostic.isEmpty ? 1 : organShare) / Double(organ.count) }
    out.weights = TileSampling.weights(datasets: out.sources, labels: out.labels, datasetShare: out.share)
    for b in bad { warn("eosin: warning: skipped undecodable tile \(b)") }
    if !bad.isEmpty { warn("eosin: warning: \(bad.count) tiles could not be decoded and were skipped") }
    // Non-tissue examples.
    var rng = SeededRNG(seed: seed ^ 0xABCDEF)
    guard !out.images.isEmpty else { throw CLIError("no training tiles could be decoded: the dataset is empty") }
    out.nonTissue = (0..<syntheticNonTissue).map { k in
      NonTissue.make(kind: k, size: size, rng: &rng, blurSource: out.images[k % out.images.count])
    }
    for s in backgroundSlides { out.nonTissue += try backgroundTiles(s, size: size) }
    warn("training set: \(out.images.count) tiles in \(Set(out.labels).count) classes, \(out.nonTissue.count) non-tissue images")
    return out
  }
}

/// The default weights folder that training writes and every command reads.
let defaultWeights = "Weights/eosin-small-v2"
/// The diagnostic tile sets of ../shared/data (their classes are prompt-set classes).
let defaultDiagnosticData = ["lc25000-lung", "ebhi-seg", "prostate-panda", "endometrium"].map { "../shared/data/tiles/" + $0 }
/// The small organ sets: organ and tissue recognition, and the out-of-domain checks.
let defaultOrganData = ["monuseg-organs", "brain-glioma", "breakhis-400x", "camelyon16-lymph"].map {
  "../shared/data/tiles/" + $0
}
/// The split rule, for training.json.
let splitRule =
  "by group, stratified by label (TileManifest.splits): each group under its most frequent label; a label's groups ordered by FNV-1a(dataset/group), 70% train, 10% val, 20% test by rank; group = the manifest's group or case_id (LC25000 near-duplicate set, EBHI case, PANDA slide, endometrium case, MoNuSeg patient)"
/// What the training augmentation does, for training.json.
let augmentationSummary =
  "centre square of non-square images (as inference crops them), then random resized crop (scale 0.5-1, ratio 3/4-4/3), flips, 90-degree rotations, HED stain jitter (scale 1±0.15, shift ±0.03 in optical density), Gaussian blur (p 0.2, sigma 0.3-1.5 px), JPEG re-encoding (p 0.2, quality 30-90)"

/// Encodes a Codable value as pretty, key-sorted JSON, atomically.
/// The command line as recorded in training.json: `eosin` and the arguments, without the path
/// of the binary that happened to run it.
func invocation() -> String { (["eosin"] + CommandLine.arguments.dropFirst()).joined(separator: " ") }

func writeJSON<T: Encodable>(_ v: T, to path: String) throws {
  let e = JSONEncoder()
  e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
  try e.encode(v).write(to: URL(fileURLWithPath: path), options: .atomic)
}

/// Decodes tiles in parallel, takes the centred square of a non-square image (the view the
/// image preprocessor gives the model at inference: shortest side, centre crop), and
/// area-resizes it to size x size. Undecodable files come back nil and are listed with their
/// error.
func decodeTiles(_ paths: [String], size: Int) -> ([RawImage?], [String]) {
  let out = UnsafeMutableBufferPointer<RawImage?>.allocate(capacity: paths.count)
  out.initialize(repeating: nil)
  defer { out.deallocate() }
  let errs = UnsafeMutableBufferPointer<String?>.allocate(capacity: paths.count)
  errs.initialize(repeating: nil)
  defer { errs.deallocate() }
  parallelFor(paths.count) { i in
    do {
      let img = centreSquare(try ImageCodec.read(paths[i]))
      let r = resample(img, outWidth: size, outHeight: size)
      out[i] = RawImage(width: size, height: size, pixels: r.pixels)
    } catch {
      errs[i] = error.localizedDescription
    }
  }
  return (Array(out), errs.compactMap { $0 })
}

/// The centred square of an image, as wide as its shorter side (the image itself when square).
func centreSquare(_ img: RGBImage) -> RGBImage {
  let n = min(img.width, img.height)
  return img.width == img.height ? img : img.crop(x: (img.width - n) / 2, y: (img.height - n) / 2, width: n, height: n)
}

/// Background tiles (no tissue) of a slide at 0.5 µm/px, 224 px, resized to size x size.
func backgroundTiles(_ path: String, size: Int) throws -> [RawImage] {
  let s = try Slide(path: path)
  let mask = try TissueDetector().detect(s)
  let t = try Tiler(slide: s, mpp: 0.5, tileSize: 224, tissue: nil, minTissue: 0)
  var out: [RawImage] = []
  for ref in t.grid.tiles
  where mask.fraction(x0: Double(ref.x), y0: Double(ref.y), width: t.grid.extent0, height: t.grid.extent0) == 0 {
    let img = resample(try t.read(ref), outWidth: size, outHeight: size)
    out.append(RawImage(width: size, height: size, pixels: img.pixels))
  }
  return out
}

/// Every synonym the prompt sets in `dir` use, lower-cased: the wording training captions hold
/// out, so that zero-shot measures new wording.
func promptSynonyms(_ dir: String) -> Set<String> {
  var out: Set<String> = []
  for f in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted() where f.hasSuffix(".json") {
    if let o = try? JSONSerialization.jsonObject(with: FileManager.default.contents(atPath: dir + "/" + f) ?? Data())
      as? [String: Any]
    {
      for c in (o["classes"] as? [[String: Any]]) ?? [] {
        for s in (c["synonyms"] as? [String]) ?? [] { out.insert(s.lowercased()) }
      }
    }
  }
  return out
}
