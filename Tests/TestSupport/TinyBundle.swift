import EosinModels
import EosinTraining
import EosinWeights
import Foundation

extension TestSupport {
  /// Writes a tiny random model bundle (CLIP pair + the small test vocabulary + a manifest with
  /// 32-px tiles at 1.0 µm/px) and returns its folder. Deterministic for a seed.
  public static func writeTinyBundle(at dir: String, seed: UInt64 = 3, temperature: Double = 1) throws -> String {
    let clipDir = dir + "/clip"
    try FileManager.default.createDirectory(atPath: clipDir, withIntermediateDirectories: true)
    let vocab = projectRoot + "/Tests/EosinTokenizerTests/Fixtures/small-bpe"
    for f in ["vocab.json", "merges.txt", "special_tokens.json"] {
      try? FileManager.default.removeItem(atPath: clipDir + "/" + f)
      try FileManager.default.copyItem(atPath: vocab + "/" + f, toPath: clipDir + "/" + f)
    }
    var cfg = CLIPConfig.eosin(
      vocabSize: 1200, eos: 1195, width: 32, visionLayers: 1, textLayers: 1, heads: 2, embedDim: 16, imageSize: 32,
      contextLength: 24)
    cfg.visionConfig.patchSize = 8
    cfg.visionConfig.intermediateSize = 64
    cfg.textConfig.intermediateSize = 64
    let m = try TrainCLIP(config: cfg, seed: seed)
    try SafeTensorsWriter.write(m.export(), to: clipDir + "/model.safetensors")
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    try e.encode(cfg).write(to: URL(fileURLWithPath: clipDir + "/config.json"))
    let man: [String: Any] = [
      "name": "tiny-test", "native": ["tile_size": 32, "mpp": 1.0], "calibration": ["temperature": temperature],
      "review": [
        "min_probability": 0.6, "min_margin": 0.1, "max_prompt_spread": 0.2, "min_domain_similarity": -1,
        "min_tissue_fraction": 0.02,
      ],
    ]
    try JSONSerialization.data(withJSONObject: man).write(to: URL(fileURLWithPath: dir + "/manifest.json"))
    // A tiny random decoder with its projector.
    let decDir = dir + "/decoder"
    try FileManager.default.createDirectory(atPath: decDir, withIntermediateDirectories: true)
    for f in ["vocab.json", "merges.txt", "special_tokens.json"] {
      try? FileManager.default.removeItem(atPath: decDir + "/" + f)
      try FileManager.default.copyItem(atPath: vocab + "/" + f, toPath: decDir + "/" + f)
    }
    var g = GPT2Config()
    g.vocabSize = 1200
    g.nEmbd = 32
    g.nLayer = 1
    g.nHead = 2
    g.nPositions = 96
    g.eosTokenId = 1195
    g.bosTokenId = 1195
    let dec = try TrainGPT(config: g, imageDim: 16, projectorHidden: 16, seed: seed)
    var (d, pr) = dec.export()
    // The special tokens (ids 1195...1199) get zero embeddings, so their tied logits are 0 and a
    // random decoder never ends or derails an answer early: chat tests see it stream every token.
    d["transformer.wte.weight"]!.data.replaceSubrange((1195 * 32)..<(1200 * 32), with: repeatElement(0, count: 5 * 32))
    try SafeTensorsWriter.write(d, to: decDir + "/model.safetensors")
    try SafeTensorsWriter.write(pr, to: decDir + "/projector.safetensors")
    try e.encode(g).write(to: URL(fileURLWithPath: decDir + "/config.json"))
    return dir
  }
}
