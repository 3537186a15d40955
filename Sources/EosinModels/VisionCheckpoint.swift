import EosinTensor
import EosinWeights
import Foundation

/// An image encoder read from a checkpoint folder as it is published, with the preprocessing its
/// own config files give.
public struct LoadedEncoder: Sendable {
  public var encoder: VisionTransformer
  public var preprocess: ImagePreprocessor
  /// The layout the folder was read as: `timm`, `transformers-vit`, `transformers-dinov2`,
  /// `transformers-clip`, `open_clip`, `open_clip-coca`.
  public var family: String
  /// The model's name from its config (timm architecture, transformers model type, folder name).
  public var name: String
  /// The weights file (or shard index) read.
  public var weightsPath: String
}

/// The one table of checkpoint names for image towers: which config file says which family,
/// and each family's tensor names mapped onto ``VisionTransformer``.
///
/// - timm (`config.json` with `architecture` and `model_args`, as the Hugging Face hub stores
///   timm models: UNI, UNI2-h, Virchow2, Prov-GigaPath, H-optimus);
/// - transformers `ViTModel` (Phikon), `Dinov2Model` (Phikon-v2), `CLIPModel` (PLIP, QuiltNet
///   in HF format) from `config.json`'s `model_type`, with `preprocessor_config.json`;
/// - open_clip (`open_clip_config.json`): ViT CLIP and CoCa image towers (QuiltNet, CoCa).
public enum VisionCheckpoint {
  /// Reads a folder. Every tensor the family needs must be present with its shape, and no
  /// unknown tensor may be left over.
  /// - Throws: ``WeightsError`` naming the file (config or weights) and the problem: an unknown
  ///   architecture, an unsupported `model_args` key, a missing or misshapen tensor.
  public static func load(_ dir: String) throws -> LoadedEncoder {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
      throw WeightsError.io(file: dir, message: "encoder folder not found")
    }
    let oc = (dir as NSString).appendingPathComponent("open_clip_config.json")
    if fm.fileExists(atPath: oc) { return try openCLIP(dir, try json(oc)) }
    let c = (dir as NSString).appendingPathComponent("config.json")
    guard fm.fileExists(atPath: c) else {
      throw WeightsError.io(file: dir, message: "no config.json or open_clip_config.json: cannot tell the model's layout")
    }
    let cfg = try json(c)
    if cfg["architecture"] is String { return try timm(dir, cfg, c) }
    switch cfg["model_type"] as? String {
    case "vit": return try hfViT(dir, cfg, c)
    case "dinov2": return try hfDinov2(dir, cfg, c)
    case "clip": return try hfCLIP(dir, cfg, c)
    case let t:
      throw WeightsError.io(
        file: c,
        message:
          "unsupported model_type '\(t ?? "(none)")': Eosin reads timm ViTs, transformers vit, dinov2 and clip, and open_clip")
    }
  }

  static func json(_ path: String) throws -> [String: Any] {
    guard let d = FileManager.default.contents(atPath: path) else { throw WeightsError.io(file: path, message: "cannot read") }
    guard let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any] else {
      throw WeightsError.io(file: path, message: "not a JSON object")
    }
    return o
  }

  // MARK: timm

  /// timm architectures Eosin knows, with the arguments their constructors pass
  /// (`timm/models/vision_transformer.py`); `model_args` override them.
  static let timmArchitectures: [String: [String: Any]] = {
    var a: [String: [String: Any]] = [:]
    for (n, p, c, d, h) in [
      ("vit_tiny_patch16_224", 16, 192, 12, 3), ("vit_small_patch16_224", 16, 384, 12, 6),
      ("vit_small_patch8_224", 8, 384, 12, 6), ("vit_base_patch16_224", 16, 768, 12, 12),
      ("vit_base_patch8_224", 8, 768, 12, 12), ("vit_base_patch32_224", 32, 768, 12, 12),
      ("vit_large_patch16_224", 16, 1024, 24, 16), ("vit_large_patch32_224", 32, 1024, 24, 16),
      ("vit_huge_patch14_224", 14, 1280, 32, 16),
    ] {
      a[n] = ["patch_size": p, "embed_dim": c, "depth": d, "num_heads": h]
    }
    a["vit_giant_patch14_224"] = ["patch_size": 14, "embed_dim": 1408, "depth": 40, "num_heads": 16, "mlp_ratio": 48.0 / 11]
    for (n, c, d, h) in [("small", 384, 12, 6), ("base", 768, 12, 12), ("large", 1024, 24, 16)] {
      let base: [String: Any] = [
        "patch_size": 14, "embed_dim": c, "depth": d, "num_heads": h, "init_values": 1e-5, "img_size": 518,
      ]
      a["vit_\(n)_patch14_dinov2"] = base
      a["vit_\(n)_patch14_reg4_dinov2"] = base.merging(["reg_tokens": 4, "no_embed_class": true]) { $1 }
    }
    let giant: [String: Any] = [
      "patch_size": 14, "embed_dim": 1536, "depth": 40, "num_heads": 24, "init_values": 1e-5, "mlp_ratio": 2.66667 * 2,
      "mlp_layer": "swiglu_packed", "act_layer": "silu", "img_size": 518,
    ]
    a["vit_giant_patch14_dinov2"] = giant
    a["vit_giant_patch14_reg4_dinov2"] = giant.merging(["reg_tokens": 4, "no_embed_class": true]) { $1 }
    return a
  }()

  /// `model_args` keys Eosin understands; the drop and init keys do nothing at inference.
  static let timmKeys: Set<String> = [
    "img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads", "mlp_ratio",
    "qkv_bias", "init_values", "class_token", "no_embed_class", "reg_tokens", "pre_norm", "final_norm", "fc_norm",
    "dynamic_img_size", "mlp_layer", "act_layer", "proj_bias", "qk_norm", "pos_embed", "drop_rate", "pos_drop_rate",
    "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init", "fix_init", "dynamic_img_pad",
  ]

  static func timm(_ dir: String, _ cfg: [String: Any], _ cfgPath: String) throws -> LoadedEncoder {
    func bad(_ m: String) -> WeightsError { WeightsError.io(file: cfgPath, message: m) }
    let full = cfg["architecture"] as! String
    let arch = String(full.split(separator: ".").first ?? "")
    guard var args = timmArchitectures[arch] else {
      throw bad(
        "unknown timm architecture '\(full)' (Eosin reads: \(timmArchitectures.keys.sorted().joined(separator: ", ")))")
    }
    let given = cfg["model_args"] as? [String: Any] ?? [:]
    for (k, v) in given {
      guard timmKeys.contains(k) else { throw bad("unsupported model_args key '\(k)' for \(arch)") }
      args[k] = v
    }
    func int(_ k: String, _ d: Int) throws -> Int {
      guard let v = args[k] else { return d }
      if let i = v as? Int { return i }
      if let a = v as? [Int], let f = a.first, a.allSatisfy({ $0 == f }) { return f }
      throw bad("model_args \(k) must be an integer (or a square pair)")
    }
    func bool(_ k: String, _ d: Bool) -> Bool { args[k] as? Bool ?? d }
    guard try int("in_chans", 3) == 3 else { throw bad("only 3-channel (RGB) models are supported") }
    guard !bool("qk_norm", false) else { throw bad("model_args qk_norm is not supported") }
    guard !bool("dynamic_img_pad", false) else { throw bad("model_args dynamic_img_pad is not supported") }
    if let p = args["pos_embed"] as? String, p != "learn" { throw bad("model_args pos_embed '\(p)' is not supported") }
    let mlpName = (args["mlp_layer"] as? String ?? "mlp").lowercased()
    let glu: Bool
    switch mlpName {
    case "mlp", "timm.layers.mlp", "timm.layers.mlp.mlp": glu = false
    case "swiglu_packed", "swiglupacked", "timm.layers.swiglupacked", "timm.layers.mlp.swiglupacked": glu = true
    default: throw bad("model_args mlp_layer '\(mlpName)' is not supported (Mlp or SwiGLUPacked)")
    }
    let actName = (args["act_layer"] as? String ?? "gelu")
    guard let act = Activation(configName: actName) else { throw bad("model_args act_layer '\(actName)' is not supported") }
    let C = try int("embed_dim", 768), depth = try int("depth", 12), heads = try int("num_heads", 12)
    let P = try int("patch_size", 16)
    let pool = args["global_pool"] as? String ?? cfg["global_pool"] as? String ?? "token"
    let pooling: ViTPooling
    switch pool {
    case "token": pooling = .classToken
    case "": pooling = .classAndPatchMean
    case "avg": pooling = .patchMean
    default: throw bad("global_pool '\(pool)' is not supported (token, avg, or '' for concat(CLS, patch mean))")
    }
    let useFC = (args["fc_norm"] as? Bool) ?? (pool == "avg")
    let finalNorm = bool("final_norm", true)
    let hasCLS = bool("class_token", true)
    let R = try int("reg_tokens", 0)
    let noEmbedClass = bool("no_embed_class", false)
    let eps: Float = 1e-6
    let pre = cfg["pretrained_cfg"] as? [String: Any] ?? [:]
    let imgSize = try int("img_size", 224)
    let dynamic = bool("dynamic_img_size", false)
    let input = dynamic ? ((pre["input_size"] as? [Int])?.last ?? imgSize) : imgSize
    guard C > 0, heads > 0, C % heads == 0, depth > 0, P > 0, input % P == 0 else {
      throw bad("embed_dim \(C) must divide by num_heads \(heads), and the input size \(input) by the patch size \(P)")
    }
    let store = try WeightsLocator.open(dir)
    var t = TensorTable(store)
    let prefix = (hasCLS ? 1 : 0) + R
    let positioned = noEmbedClass ? 0 : prefix
    var vit = try VisionTransformer(
      width: C, patch: P, inputSize: input, pooling: pooling, antialias: true,
      patch: (
        try t.take("patch_embed.proj.weight", [C, 3, P, P]),
        t.has("patch_embed.proj.bias") ? try t.take("patch_embed.proj.bias", [C]) : nil
      ),
      classToken: hasCLS ? try t.take("cls_token", [1, 1, C]) : nil,
      registers: R > 0 ? try t.take("reg_token", [1, R, C]) : nil,
      positions: try takePositions(&t, "pos_embed", C, positioned, leading: true), positionedPrefix: positioned,
      file: store.path)
    if bool("pre_norm", false) { vit.preNorm = try LayerNorm.load(&t, "norm_pre", C, eps: eps) }
    vit.blocks = try (0..<depth).map { i in
      let p = "blocks.\(i)"
      let hidden = try mlpWidth(t, p + ".mlp.fc1.weight", C)
      var b = TransformerBlock(
        ln1: try LayerNorm.load(&t, p + ".norm1", C, eps: eps), qkv: try optionalBias(&t, p + ".attn.qkv", C, 3 * C),
        proj: try optionalBias(&t, p + ".attn.proj", C, C), ln2: try LayerNorm.load(&t, p + ".norm2", C, eps: eps),
        fc1: try Linear.load(&t, p + ".mlp.fc1", C, hidden),
        fc2: try Linear.load(&t, p + ".mlp.fc2", glu ? hidden / 2 : hidden, C),
        act: act, heads: heads)
      b.glu = glu
      if t.has(p + ".ls1.gamma") {
        b.ls1 = try t.take(p + ".ls1.gamma", [C])
        b.ls2 = try t.take(p + ".ls2.gamma", [C])
      }
      return b
    }
    if finalNorm && !useFC { vit.finalNorm = try LayerNorm.load(&t, "norm", C, eps: eps) }
    if finalNorm && useFC { vit.fcNorm = try LayerNorm.load(&t, "fc_norm", C, eps: eps) }
    try t.finish(ignoring: Set(store.shapes.keys.filter { $0.hasPrefix("head.") }))
    var pp = ImagePreprocessor(imageSize: input)
    let crop = (pre["crop_pct"] as? Double) ?? 1
    pp.size = crop > 0 ? Int((Double(input) / crop).rounded(.down)) : input
    if let m = pre["mean"] as? [Double], m.count == 3 { pp.mean = m.map(Float.init) } else { pp.mean = [0.485, 0.456, 0.406] }
    if let s = pre["std"] as? [Double], s.count == 3 { pp.std = s.map(Float.init) } else { pp.std = [0.229, 0.224, 0.225] }
    return LoadedEncoder(encoder: vit, preprocess: pp, family: "timm", name: full, weightsPath: store.path)
  }

  /// The MLP's hidden width, from fc1's stored shape (timm rounds `embed_dim * mlp_ratio`).
  static func mlpWidth(_ t: TensorTable, _ name: String, _ C: Int) throws -> Int {
    guard let s = t.shape(name) else { throw WeightsError.tensor(file: t.store.path, tensor: name, message: "missing") }
    guard s.count == 2, s[1] == C, s[0] > 0 else {
      throw WeightsError.tensor(file: t.store.path, tensor: name, message: "expected shape [hidden, \(C)], found \(s)")
    }
    return s[0]
  }

  static func optionalBias<S: TensorSource>(_ t: inout S, _ p: String, _ C: Int, _ OC: Int) throws -> Linear {
    let w = try t.take(p + ".weight", [OC, C])
    if let tt = t as? TensorTable, !tt.has(p + ".bias") { return Linear(weight: w, bias: nil) }
    return Linear(weight: w, bias: try t.take(p + ".bias", [OC]))
  }

  /// A position table of (positioned + G*G) rows, stored as (1, L, C) (`leading`) or (L, C);
  /// the grid side G comes from the stored length.
  static func takePositions(_ t: inout TensorTable, _ name: String, _ C: Int, _ positioned: Int, leading: Bool) throws -> Tensor {
    guard let s = t.shape(name) else { throw WeightsError.tensor(file: t.store.path, tensor: name, message: "missing") }
    let L = leading ? (s.count == 3 ? s[1] : -1) : (s.count == 2 ? s[0] : -1)
    let G = Int(Double(max(L - positioned, 0)).squareRoot().rounded())
    guard L > positioned, G * G == L - positioned, s.last == C else {
      throw WeightsError.tensor(
        file: t.store.path, tensor: name,
        message: "expected \(positioned) prefix rows and a square grid of \(C)-wide positions, found shape \(s)")
    }
    return try t.take(name, s).reshaped([L, C])
  }

  static func fusedQKV<S: TensorSource>(_ t: inout S, _ q: String, _ k: String, _ v: String, _ C: Int, bias: Bool = true)
    throws -> Linear
  {
    let a = try Linear.load(&t, q, C, C, bias: bias), b = try Linear.load(&t, k, C, C, bias: bias)
    let c = try Linear.load(&t, v, C, C, bias: bias)
    return Linear(
      weight: Tensor(shape: [3 * C, C], data: a.weight.data + b.weight.data + c.weight.data),
      bias: bias ? Tensor(shape: [3 * C], data: a.bias!.data + b.bias!.data + c.bias!.data) : nil)
  }

  // MARK: transformers

  static func hfInt(_ cfg: [String: Any], _ k: String, _ d: Int) -> Int { cfg[k] as? Int ?? d }

  /// The input side from `preprocessor_config.json` (crop, else size), else `image_size`.
  static func hfPreprocess(_ dir: String, _ imageSize: Int) throws -> ImagePreprocessor {
    let p = (dir as NSString).appendingPathComponent("preprocessor_config.json")
    guard let d = FileManager.default.contents(atPath: p) else { return ImagePreprocessor(imageSize: imageSize) }
    do { return try ImagePreprocessor(configData: d, imageSize: imageSize) } catch {
      throw WeightsError.io(file: p, message: "\(error.localizedDescription)")
    }
  }

  /// transformers' ViT and Dinov2 embeddings: patch projection, class token, positions (for the
  /// class token and the patch grid; Dinov2 resamples them plain bicubic). Pooled at the class
  /// token after the final norm.
  static func hfEmbeddings(_ t: inout TensorTable, _ C: Int, _ P: Int, _ S: Int) throws -> VisionTransformer {
    try VisionTransformer(
      width: C, patch: P, inputSize: S, pooling: .classToken, antialias: false,
      patch: (
        try t.take("embeddings.patch_embeddings.projection.weight", [C, 3, P, P]),
        try t.take("embeddings.patch_embeddings.projection.bias", [C])
      ), classToken: try t.take("embeddings.cls_token", [1, 1, C]), registers: nil,
      positions: try takePositions(&t, "embeddings.position_embeddings", C, 1, leading: true), positionedPrefix: 1,
      file: t.store.path)
  }

  static func hfViT(_ dir: String, _ cfg: [String: Any], _ cfgPath: String) throws -> LoadedEncoder {
    let C = hfInt(cfg, "hidden_size", 768), depth = hfInt(cfg, "num_hidden_layers", 12)
    let heads = hfInt(cfg, "num_attention_heads", 12), I = hfInt(cfg, "intermediate_size", 3072)
    let S = hfInt(cfg, "image_size", 224), P = hfInt(cfg, "patch_size", 16)
    let eps = Float(cfg["layer_norm_eps"] as? Double ?? 1e-12)
    let qkvBias = cfg["qkv_bias"] as? Bool ?? true
    guard let act = Activation(configName: cfg["hidden_act"] as? String ?? "gelu") else {
      throw WeightsError.io(file: cfgPath, message: "unsupported hidden_act '\(cfg["hidden_act"] ?? "")'")
    }
    guard C % heads == 0, S % P == 0 else {
      throw WeightsError.io(file: cfgPath, message: "hidden_size must divide by heads and image_size by patch_size")
    }
    let store = try WeightsLocator.open(dir)
    var t = TensorTable(store)
    var vit = try hfEmbeddings(&t, C, P, S)
    // transformers 4 names (as Phikon is published) or transformers 5 names.
    let v4 = t.has("encoder.layer.0.attention.attention.query.weight")
    vit.blocks = try (0..<depth).map { i in
      if v4 {
        let p = "encoder.layer.\(i)"
        return TransformerBlock(
          ln1: try LayerNorm.load(&t, p + ".layernorm_before", C, eps: eps),
          qkv: try fusedQKV(
            &t, p + ".attention.attention.query", p + ".attention.attention.key", p + ".attention.attention.value", C,
            bias: qkvBias),
          proj: try Linear.load(&t, p + ".attention.output.dense", C, C),
          ln2: try LayerNorm.load(&t, p + ".layernorm_after", C, eps: eps),
          fc1: try Linear.load(&t, p + ".intermediate.dense", C, I), fc2: try Linear.load(&t, p + ".output.dense", I, C),
          act: act, heads: heads)
      }
      let p = "layers.\(i)"
      return TransformerBlock(
        ln1: try LayerNorm.load(&t, p + ".layernorm_before", C, eps: eps),
        qkv: try fusedQKV(&t, p + ".attention.q_proj", p + ".attention.k_proj", p + ".attention.v_proj", C, bias: qkvBias),
        proj: try Linear.load(&t, p + ".attention.o_proj", C, C),
        ln2: try LayerNorm.load(&t, p + ".layernorm_after", C, eps: eps),
        fc1: try Linear.load(&t, p + ".mlp.fc1", C, I), fc2: try Linear.load(&t, p + ".mlp.fc2", I, C), act: act,
        heads: heads)
    }
    vit.finalNorm = try LayerNorm.load(&t, "layernorm", C, eps: eps)
    try t.finish(ignoring: Set(store.shapes.keys.filter { $0.hasPrefix("pooler.") }))
    var pp = try hfPreprocess(dir, S)
    pp.crop = S
    pp.size = max(pp.size, S)
    return LoadedEncoder(encoder: vit, preprocess: pp, family: "transformers-vit", name: "vit", weightsPath: store.path)
  }

  static func hfDinov2(_ dir: String, _ cfg: [String: Any], _ cfgPath: String) throws -> LoadedEncoder {
    let C = hfInt(cfg, "hidden_size", 768), depth = hfInt(cfg, "num_hidden_layers", 12)
    let heads = hfInt(cfg, "num_attention_heads", 12), P = hfInt(cfg, "patch_size", 14)
    let eps = Float(cfg["layer_norm_eps"] as? Double ?? 1e-6)
    let swiglu = cfg["use_swiglu_ffn"] as? Bool ?? false
    guard let act = Activation(configName: cfg["hidden_act"] as? String ?? "gelu") else {
      throw WeightsError.io(file: cfgPath, message: "unsupported hidden_act '\(cfg["hidden_act"] ?? "")'")
    }
    var pp = try hfPreprocess(dir, hfInt(cfg, "image_size", 518))
    let S = pp.crop
    guard C % heads == 0, S % P == 0 else {
      throw WeightsError.io(file: cfgPath, message: "hidden_size must divide by heads and the crop size \(S) by patch_size \(P)")
    }
    let store = try WeightsLocator.open(dir)
    var t = TensorTable(store)
    var vit = try hfEmbeddings(&t, C, P, S)
    vit.blocks = try (0..<depth).map { i in
      let p = "encoder.layer.\(i)"
      let fc1Name = swiglu ? p + ".mlp.weights_in" : p + ".mlp.fc1"
      let fc2Name = swiglu ? p + ".mlp.weights_out" : p + ".mlp.fc2"
      let hidden = try mlpWidth(t, fc1Name + ".weight", C)
      var b = TransformerBlock(
        ln1: try LayerNorm.load(&t, p + ".norm1", C, eps: eps),
        qkv: try fusedQKV(
          &t, p + ".attention.attention.query", p + ".attention.attention.key", p + ".attention.attention.value", C,
          bias: cfg["qkv_bias"] as? Bool ?? true),
        proj: try Linear.load(&t, p + ".attention.output.dense", C, C), ln2: try LayerNorm.load(&t, p + ".norm2", C, eps: eps),
        fc1: try Linear.load(&t, fc1Name, C, hidden), fc2: try Linear.load(&t, fc2Name, swiglu ? hidden / 2 : hidden, C),
        act: swiglu ? .silu : act, heads: heads)
      b.glu = swiglu
      b.ls1 = try t.take(p + ".layer_scale1.lambda1", [C])
      b.ls2 = try t.take(p + ".layer_scale2.lambda1", [C])
      return b
    }
    vit.finalNorm = try LayerNorm.load(&t, "layernorm", C, eps: eps)
    try t.finish(ignoring: ["embeddings.mask_token"])
    pp.size = max(pp.size, S)
    return LoadedEncoder(encoder: vit, preprocess: pp, family: "transformers-dinov2", name: "dinov2", weightsPath: store.path)
  }

  /// The image tower of a transformers `CLIPModel` (its text tower is read by ``CLIPModel``).
  static func hfCLIP(_ dir: String, _ cfg: [String: Any], _ cfgPath: String) throws -> LoadedEncoder {
    let config: CLIPConfig
    do { config = try JSONDecoder().decode(CLIPConfig.self, from: JSONSerialization.data(withJSONObject: cfg)) } catch {
      throw WeightsError.io(file: cfgPath, message: "not a CLIPConfig: \(error.localizedDescription)")
    }
    let S = config.visionConfig.imageSize
    guard config.visionConfig.numChannels == 3, config.visionConfig.hiddenSize % config.visionConfig.numAttentionHeads == 0,
      S % config.visionConfig.patchSize == 0
    else {
      throw WeightsError.io(
        file: cfgPath, message: "vision_config: 3 channels, hidden_size dividing by heads, image_size by patch_size")
    }
    let store = try WeightsLocator.open(dir)
    var t = TensorTable(store)
    let vit = try CLIPModel.visionTower(config, &t)
    // The text tower and logit scale belong to zero-shot, not to image features.
    try t.finish(
      ignoring: Set(
        store.shapes.keys.filter { $0.hasPrefix("text_model.") || $0 == "text_projection.weight" || $0 == "logit_scale" }
      )
      .union(["vision_model.embeddings.position_ids"]))
    return LoadedEncoder(
      encoder: vit, preprocess: try hfPreprocess(dir, S), family: "transformers-clip", name: "clip", weightsPath: store.path)
  }

  // MARK: open_clip

  static func openCLIP(_ dir: String, _ top: [String: Any]) throws -> LoadedEncoder {
    let cfgPath = (dir as NSString).appendingPathComponent("open_clip_config.json")
    func bad(_ m: String) -> WeightsError { WeightsError.io(file: cfgPath, message: m) }
    guard let mc = top["model_cfg"] as? [String: Any], let vc = mc["vision_cfg"] as? [String: Any] else {
      throw bad("no model_cfg.vision_cfg")
    }
    if vc["timm_model_name"] != nil { throw bad("open_clip towers built on a timm trunk (timm_model_name) are not supported") }
    let D = mc["embed_dim"] as? Int ?? 512
    let S = (vc["image_size"] as? Int) ?? ((vc["image_size"] as? [Int])?.first ?? 224)
    let C = vc["width"] as? Int ?? 768, depth = vc["layers"] as? Int ?? 12, P = vc["patch_size"] as? Int ?? 16
    let heads = C / (vc["head_width"] as? Int ?? 64)
    let quick = mc["quick_gelu"] as? Bool ?? false
    let coca = vc["attentional_pool"] as? Bool ?? false
    if let ap = vc["attentional_pool"] as? String { throw bad("attentional_pool '\(ap)' is not supported") }
    guard heads > 0, C % heads == 0, S % P == 0 else { throw bad("width must divide by head_width and image_size by patch_size") }
    let store = try WeightsLocator.open(dir)
    var t = TensorTable(store)
    let eps: Float = 1e-5
    var vit = try VisionTransformer(
      width: C, patch: P, inputSize: S, pooling: coca ? .attentionalPool : .projected, antialias: false,
      patch: (try t.take("visual.conv1.weight", [C, 3, P, P]), nil), classToken: try t.take("visual.class_embedding", [C]),
      registers: nil, positions: try takePositions(&t, "visual.positional_embedding", C, 1, leading: false),
      positionedPrefix: 1, file: store.path)
    vit.preNorm = try LayerNorm.load(&t, "visual.ln_pre", C, eps: eps)
    vit.blocks = try (0..<depth).map {
      try openCLIPBlock(&t, "visual.transformer.resblocks.\($0)", C, heads, quick ? .quickGelu : .gelu)
    }
    if coca {
      let ph = vc["attn_pooler_heads"] as? Int ?? 8
      let p = "visual.attn_pool"
      guard let qs = t.shape(p + ".query"), qs.count == 2, qs[1] == D else {
        throw WeightsError.tensor(file: store.path, tensor: p + ".query", message: "expected (queries, \(D))")
      }
      let q: Linear, k: Linear, v: Linear
      let b = try t.take(p + ".attn.in_proj_bias", [3 * D])
      func slice(_ i: Int) -> Tensor { Tensor(shape: [D], data: Array(b.data[(i * D)..<((i + 1) * D)])) }
      if t.has(p + ".attn.in_proj_weight") {
        let w = try t.take(p + ".attn.in_proj_weight", [3 * D, D])
        q = Linear(weight: w.rows(0..<D), bias: slice(0))
        k = Linear(weight: w.rows(D..<(2 * D)), bias: slice(1))
        v = Linear(weight: w.rows((2 * D)..<(3 * D)), bias: slice(2))
      } else {
        q = Linear(weight: try t.take(p + ".attn.q_proj_weight", [D, D]), bias: slice(0))
        k = Linear(weight: try t.take(p + ".attn.k_proj_weight", [D, C]), bias: slice(1))
        v = Linear(weight: try t.take(p + ".attn.v_proj_weight", [D, C]), bias: slice(2))
      }
      vit.pooler = AttentionalPooler(
        query: try t.take(p + ".query", qs), lnQ: try LayerNorm.load(&t, p + ".ln_q", D, eps: eps),
        lnK: try LayerNorm.load(&t, p + ".ln_k", C, eps: eps), q: q, k: k, v: v,
        out: try Linear.load(&t, p + ".attn.out_proj", D, D), heads: ph)
      vit.finalNorm = try LayerNorm.load(&t, "visual.ln_post", D, eps: eps)
      vit.projection = Linear(weight: transposed(try t.take("visual.proj", [D, D])), bias: nil)
    } else {
      vit.finalNorm = try LayerNorm.load(&t, "visual.ln_post", C, eps: eps)
      vit.projection = Linear(weight: transposed(try t.take("visual.proj", [C, D])), bias: nil)
    }
    try t.finish(ignoring: Set(store.shapes.keys.filter { !$0.hasPrefix("visual.") }))
    var pp = ImagePreprocessor(imageSize: S)
    if let pc = top["preprocess_cfg"] as? [String: Any] {
      if let m = pc["mean"] as? [Double], m.count == 3 { pp.mean = m.map(Float.init) }
      if let s = pc["std"] as? [Double], s.count == 3 { pp.std = s.map(Float.init) }
    }
    return LoadedEncoder(
      encoder: vit, preprocess: pp, family: coca ? "open_clip-coca" : "open_clip",
      name: (dir as NSString).lastPathComponent, weightsPath: store.path)
  }

  /// open_clip's `ResidualAttentionBlock`: fused `in_proj`, optional LayerScale.
  static func openCLIPBlock(_ t: inout TensorTable, _ p: String, _ C: Int, _ heads: Int, _ act: Activation) throws
    -> TransformerBlock
  {
    let hidden = try mlpWidth(t, p + ".mlp.c_fc.weight", C)
    var b = TransformerBlock(
      ln1: try LayerNorm.load(&t, p + ".ln_1", C, eps: 1e-5),
      qkv: Linear(
        weight: try t.take(p + ".attn.in_proj_weight", [3 * C, C]), bias: try t.take(p + ".attn.in_proj_bias", [3 * C])),
      proj: try Linear.load(&t, p + ".attn.out_proj", C, C), ln2: try LayerNorm.load(&t, p + ".ln_2", C, eps: 1e-5),
      fc1: try Linear.load(&t, p + ".mlp.c_fc", C, hidden), fc2: try Linear.load(&t, p + ".mlp.c_proj", hidden, C), act: act,
      heads: heads)
    if t.has(p + ".ls_1.gamma") {
      b.ls1 = try t.take(p + ".ls_1.gamma", [C])
      b.ls2 = try t.take(p + ".ls_2.gamma", [C])
    }
    return b
  }

  /// (R, K) -> (K, R).
  static func transposed(_ m: Tensor) -> Tensor {
    let R = m.shape[0], K = m.shape[1]
    var o = [Float](repeating: 0, count: R * K)
    for r in 0..<R { for k in 0..<K { o[k * R + r] = m.data[r * K + k] } }
    return Tensor(shape: [K, R], data: o)
  }
}

extension VisionTransformer {
  /// Assembles the parts every family has; blocks and norms are set by the family's loader.
  /// Resamples the position grid to the input's when they differ.
  init(
    width C: Int, patch P: Int, inputSize S: Int, pooling: ViTPooling, antialias: Bool, patch pw: (Tensor, Tensor?),
    classToken: Tensor?, registers: Tensor?, positions: Tensor, positionedPrefix: Int, file: String
  ) throws {
    patchLinear = Linear(weight: pw.0.reshaped([C, 3 * P * P]), bias: pw.1)
    patch = P
    self.classToken = classToken.map { $0.reshaped([C]) }
    self.registers = registers.map { $0.reshaped([$0.count / C, C]) }
    self.positionedPrefix = positionedPrefix
    let L = positions.shape[0], g = Int(Double(L - positionedPrefix).squareRoot().rounded()), n = S / P
    if g == n {
      self.positions = positions
    } else {
      let grid = Array(positions.data[(positionedPrefix * C)...])
      let r = PositionResampler.resample(grid, from: g, g, to: n, n, channels: C, antialias: antialias)
      self.positions = Tensor(shape: [positionedPrefix + n * n, C], data: Array(positions.data[0..<(positionedPrefix * C)]) + r)
    }
    self.pooling = pooling
    inputSize = S
    width = C
    blocks = []
  }
}
