import EosinModels
import EosinTensor
import EosinWeights
import Foundation

extension CLIPConfig {
  /// Eosin's CLIP architecture: a ViT (patch 16, quick-GELU, MLP 4x width) on `imageSize`-px
  /// inputs and a causal text transformer over `vocabSize` tokens with `contextLength`
  /// positions, pooled at `eos`. The defaults are eosin-small-v1's (v2 uses 160 px): width 192, 6 vision and 4
  /// text layers, 3 heads, 112 px, 40 tokens, 128-d shared space.
  public static func eosin(
    vocabSize: Int, eos: Int, width: Int = 192, visionLayers: Int = 6, textLayers: Int = 4, heads: Int = 3, embedDim: Int = 128,
    imageSize: Int = 112, contextLength: Int = 40
  ) -> CLIPConfig {
    var c = CLIPConfig()
    c.projectionDim = embedDim
    c.visionConfig.hiddenSize = width
    c.visionConfig.intermediateSize = 4 * width
    c.visionConfig.numHiddenLayers = visionLayers
    c.visionConfig.numAttentionHeads = heads
    c.visionConfig.imageSize = imageSize
    c.visionConfig.patchSize = 16
    c.textConfig.vocabSize = vocabSize
    c.textConfig.hiddenSize = width
    c.textConfig.intermediateSize = 4 * width
    c.textConfig.numHiddenLayers = textLayers
    c.textConfig.numAttentionHeads = heads
    c.textConfig.maxPositionEmbeddings = contextLength
    c.textConfig.eosTokenId = eos
    c.textConfig.bosTokenId = eos
    return c
  }
}

/// A CLIP pair for training (forward with cached activations, backward, AdamW through its
/// ParameterSet). ``export()`` writes HF `CLIPModel` tensor names, so the result loads in
/// ``CLIPModel`` for inference. The image side takes preprocessed pixels (B,3,S,S).
public final class TrainCLIP {
  public let config: CLIPConfig
  public let params = ParameterSet()
  let vis: [TrainBlock]
  let txt: [TrainBlock]
  let patchW: Int, classEmb: Int, vPos: Int, preLNw: Int, preLNb: Int, postLNw: Int, postLNb: Int, vProj: Int
  let tokEmb: Int, tPos: Int, finLNw: Int, finLNb: Int, tProj: Int, logitScale: Int

  public init(config cfg: CLIPConfig, seed: UInt64) throws {
    config = cfg
    let v = cfg.visionConfig, t = cfg.textConfig
    let C = v.hiddenSize, P = v.patchSize, NP = (v.imageSize / P) * (v.imageSize / P), D = cfg.projectionDim, TC = t.hiddenSize
    var ri = RandomInit(seed: seed, layers: v.numHiddenLayers)
    let p = params
    func add(_ n: String, _ s: [Int]) -> Int { p.add(n, ri.make(n, s)) }
    patchW = add("vision.patch.weight", [C, v.numChannels * P * P])
    classEmb = add("vision.class_embedding", [C])
    vPos = add("vision.position_embedding", [NP + 1, C])
    preLNw = add("vision.pre_ln.weight", [C]); preLNb = add("vision.pre_ln.bias", [C])
    let vact = Activation(configName: v.hiddenAct)!, tact = Activation(configName: t.hiddenAct)!
    vis = (0..<v.numHiddenLayers).map {
      TrainBlock(p, "vision.\($0).", C: C, I: v.intermediateSize, NH: v.numAttentionHeads, act: vact, source: &ri)
    }
    postLNw = add("vision.post_ln.weight", [C]); postLNb = add("vision.post_ln.bias", [C])
    vProj = add("vision.proj.weight", [D, C])
    ri.layers = t.numHiddenLayers
    tokEmb = add("text.token_embedding", [t.vocabSize, TC])
    tPos = add("text.position_embedding", [t.maxPositionEmbeddings, TC])
    txt = (0..<t.numHiddenLayers).map {
      TrainBlock(p, "text.\($0).", C: TC, I: t.intermediateSize, NH: t.numAttentionHeads, act: tact, source: &ri)
    }
    finLNw = add("text.final_ln.weight", [TC]); finLNb = add("text.final_ln.bias", [TC])
    tProj = add("text.proj.weight", [D, TC])
    logitScale = p.add("logit_scale", Tensor(shape: [], data: [logf(1 / 0.07)]))
  }

  /// One training step's forward and backward on a batch; gradients accumulate in `params`.
  /// - Parameters:
  ///   - pixels: (B,3,S,S) preprocessed images.
  ///   - ids: B rows of token ids, each with its end token, padded to one length.
  ///   - labels: class index per pair, for the label-aware contrastive loss.
  /// - Returns: the loss.
  public func step(pixels: [Float], ids: [[Int32]], labels: [Int]) -> Float {
    let B = ids.count, D = config.projectionDim
    let (img, imgCache) = encodeImage(pixels, B)
    let (txtF, txtCache) = encodeText(ids)
    var imgN = img, txtN = txtF
    var ni = [Float](repeating: 0, count: B), nt = ni
    imgN.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, &ni, img, B, D) }
    txtN.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, &nt, txtF, B, D) }
    var dimgN = [Float](repeating: 0, count: B * D), dtxtN = dimgN
    var scratch = [Float](repeating: 0, count: B * B)
    let ls = params.data[logitScale]
    var dls: Float = 0
    let loss = contrastiveLossForwardBackward(&dimgN, &dtxtN, &dls, &scratch, imgN, txtN, ls, B, D, labels: labels)
    params.grad[logitScale] += dls
    var dimg = [Float](repeating: 0, count: B * D), dtxt = dimg
    l2normBackward(&dimg, dimgN, imgN, ni, B, D)
    l2normBackward(&dtxt, dtxtN, txtN, nt, B, D)
    backwardImage(dimg, imgCache)
    backwardText(dtxt, txtCache)
    return loss
  }

  struct ImageCache {
    var B: Int, cols: [Float], x0: [Float], preMean: [Float], preRstd: [Float], xPre: [Float], cls: [Float], postMean: [Float],
      postRstd: [Float], pooled: [Float]
  }

  func encodeImage(_ px: [Float], _ B: Int) -> ([Float], ImageCache) {
    let v = config.visionConfig
    let S = v.imageSize, P = v.patchSize, G = S / P, NP = G * G, C = v.hiddenSize, K = v.numChannels * P * P, T = NP + 1,
      D = config.projectionDim
    var cols = [Float](repeating: 0, count: B * NP * K)
    for b in 0..<B {
      for gy in 0..<G {
        for gx in 0..<G {
          var k = (b * NP + gy * G + gx) * K
          for ch in 0..<v.numChannels {
            for py in 0..<P {
              let src = b * v.numChannels * S * S + ch * S * S + (gy * P + py) * S + gx * P
              for q in 0..<P { cols[k + q] = px[src + q] }
              k += P
            }
          }
        }
      }
    }
    var pe = [Float](repeating: 0, count: B * NP * C)
    var x = [Float](repeating: 0, count: B * T * C)
    var xPre = x, mean = [Float](repeating: 0, count: B * T), rstd = mean
    var cls = [Float](repeating: 0, count: B * C), pooled = cls, pm = [Float](repeating: 0, count: B), pr = pm
    var out = [Float](repeating: 0, count: B * D)
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      matmulForward(&pe, cols, W + patchW, nil, B * NP, K, C)
      for b in 0..<B {
        for i in 0..<C { x[b * T * C + i] = W[classEmb + i] + W[vPos + i] }
        for p in 0..<NP {
          for i in 0..<C { x[b * T * C + (p + 1) * C + i] = pe[(b * NP + p) * C + i] + W[vPos + (p + 1) * C + i] }
        }
      }
      xPre = x
      layernormForward(&x, &mean, &rstd, xPre, W + preLNw, W + preLNb, B * T, C)
    }
    for blk in vis { blk.forward(&x, B: B, T: T, causal: false) }
    for b in 0..<B { for i in 0..<C { cls[b * C + i] = x[b * T * C + i] } }
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      layernormForward(&pooled, &pm, &pr, cls, W + postLNw, W + postLNb, B, C)
      matmulForward(&out, pooled, W + vProj, nil, B, C, D)
    }
    return (
      out,
      ImageCache(
        B: B, cols: cols, x0: xPre, preMean: mean, preRstd: rstd, xPre: xPre, cls: cls, postMean: pm, postRstd: pr, pooled: pooled
      )
    )
  }

  func backwardImage(_ dout: [Float], _ c: ImageCache) {
    let v = config.visionConfig
    let P = v.patchSize, G = v.imageSize / P, NP = G * G, C = v.hiddenSize, K = v.numChannels * P * P, T = NP + 1,
      D = config.projectionDim
    let B = c.B
    var dpooled = [Float](repeating: 0, count: B * C), dcls = dpooled
    var dx = [Float](repeating: 0, count: B * T * C)
    params.data.withUnsafeBufferPointer { wb in
      params.grad.withUnsafeMutableBufferPointer { gb in
        let W = wb.baseAddress!, Gp = gb.baseAddress!
        matmulBackward(&dpooled, Gp + vProj, nil, dout, c.pooled, W + vProj, B, C, D)
        layernormBackward(&dcls, Gp + postLNw, Gp + postLNb, dpooled, c.cls, W + postLNw, c.postMean, c.postRstd, B, C)
      }
    }
    for b in 0..<B { for i in 0..<C { dx[b * T * C + i] = dcls[b * C + i] } }
    for blk in vis.reversed() { blk.backward(&dx) }
    var dx0 = [Float](repeating: 0, count: B * T * C)
    var dpe = [Float](repeating: 0, count: B * NP * C)
    params.data.withUnsafeBufferPointer { wb in
      params.grad.withUnsafeMutableBufferPointer { gb in
        let W = wb.baseAddress!, Gp = gb.baseAddress!
        layernormBackward(&dx0, Gp + preLNw, Gp + preLNb, dx, c.x0, W + preLNw, c.preMean, c.preRstd, B * T, C)
        for b in 0..<B {
          for i in 0..<C {
            Gp[classEmb + i] += dx0[b * T * C + i]
            Gp[vPos + i] += dx0[b * T * C + i]
          }
          for p in 0..<NP {
            for i in 0..<C {
              let g = dx0[b * T * C + (p + 1) * C + i]
              dpe[(b * NP + p) * C + i] = g
              Gp[vPos + (p + 1) * C + i] += g
            }
          }
        }
        matmulBackward(nil, Gp + patchW, nil, dpe, c.cols, W + patchW, B * NP, K, C)
      }
    }
  }

  struct TextCache {
    var B: Int, T: Int, ids: [Int32], xFinal: [Float], mean: [Float], rstd: [Float], pos: [Int], pooled: [Float]
  }

  func encodeText(_ rows: [[Int32]]) -> ([Float], TextCache) {
    let t = config.textConfig
    let B = rows.count, T = rows[0].count, C = t.hiddenSize, D = config.projectionDim
    let ids = rows.flatMap { $0 }
    var x = [Float](repeating: 0, count: B * T * C)
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      embeddingForward(&x, ids, W + tokEmb, W + tPos, B, T, C)
    }
    for blk in txt { blk.forward(&x, B: B, T: T, causal: true) }
    var xf = x, mean = [Float](repeating: 0, count: B * T), rstd = mean
    let pos = rows.map { r in r.firstIndex(of: Int32(t.eosTokenId)) ?? (T - 1) }
    var pooled = [Float](repeating: 0, count: B * C)
    var out = [Float](repeating: 0, count: B * D)
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      layernormForward(&xf, &mean, &rstd, x, W + finLNw, W + finLNb, B * T, C)
      for b in 0..<B { for i in 0..<C { pooled[b * C + i] = xf[(b * T + pos[b]) * C + i] } }
      matmulForward(&out, pooled, W + tProj, nil, B, C, D)
    }
    return (out, TextCache(B: B, T: T, ids: ids, xFinal: x, mean: mean, rstd: rstd, pos: pos, pooled: pooled))
  }

  func backwardText(_ dout: [Float], _ c: TextCache) {
    let t = config.textConfig
    let B = c.B, T = c.T, C = t.hiddenSize, D = config.projectionDim
    var dpooled = [Float](repeating: 0, count: B * C)
    var dxf = [Float](repeating: 0, count: B * T * C), dx = dxf
    params.data.withUnsafeBufferPointer { wb in
      params.grad.withUnsafeMutableBufferPointer { gb in
        let W = wb.baseAddress!, Gp = gb.baseAddress!
        matmulBackward(&dpooled, Gp + tProj, nil, dout, c.pooled, W + tProj, B, C, D)
        for b in 0..<B { for i in 0..<C { dxf[(b * T + c.pos[b]) * C + i] = dpooled[b * C + i] } }
        layernormBackward(&dx, Gp + finLNw, Gp + finLNb, dxf, c.xFinal, W + finLNw, c.mean, c.rstd, B * T, C)
      }
    }
    for blk in txt.reversed() { blk.backward(&dx) }
    params.grad.withUnsafeMutableBufferPointer { gb in
      let Gp = gb.baseAddress!
      embeddingBackward(Gp + tokEmb, Gp + tPos, dx, c.ids, B, T, C)
    }
  }

  /// The weights under HF `CLIPModel` names (q/k/v split, patch weight as (C,3,P,P)): the one
  /// place training names become checkpoint names.
  public func export(gradients: Bool = false) -> [String: Tensor] {
    let v = config.visionConfig, t = config.textConfig
    var out: [String: Tensor] = [:]
    let p = gradients ? params.gradientView() : params
    var patch = p.tensor("vision.patch.weight")
    patch.shape = [v.hiddenSize, v.numChannels, v.patchSize, v.patchSize]
    out["vision_model.embeddings.patch_embedding.weight"] = patch
    out["vision_model.embeddings.class_embedding"] = p.tensor("vision.class_embedding")
    out["vision_model.embeddings.position_embedding.weight"] = p.tensor("vision.position_embedding")
    out["vision_model.pre_layrnorm.weight"] = p.tensor("vision.pre_ln.weight")
    out["vision_model.pre_layrnorm.bias"] = p.tensor("vision.pre_ln.bias")
    out["vision_model.post_layernorm.weight"] = p.tensor("vision.post_ln.weight")
    out["vision_model.post_layernorm.bias"] = p.tensor("vision.post_ln.bias")
    out["visual_projection.weight"] = p.tensor("vision.proj.weight")
    for l in 0..<v.numHiddenLayers { exportBlock("vision.\(l).", "vision_model.encoder.layers.\(l)", v.hiddenSize, &out, p) }
    out["text_model.embeddings.token_embedding.weight"] = p.tensor("text.token_embedding")
    out["text_model.embeddings.position_embedding.weight"] = p.tensor("text.position_embedding")
    out["text_model.final_layer_norm.weight"] = p.tensor("text.final_ln.weight")
    out["text_model.final_layer_norm.bias"] = p.tensor("text.final_ln.bias")
    out["text_projection.weight"] = p.tensor("text.proj.weight")
    for l in 0..<t.numHiddenLayers { exportBlock("text.\(l).", "text_model.encoder.layers.\(l)", t.hiddenSize, &out, p) }
    out["logit_scale"] = p.tensor("logit_scale")
    return out
  }

  func exportBlock(_ src: String, _ dst: String, _ C: Int, _ out: inout [String: Tensor], _ p: ParameterSet) {

    let qkv = p.tensor(src + "qkv.weight"), qb = p.tensor(src + "qkv.bias")
    for (i, n) in ["q_proj", "k_proj", "v_proj"].enumerated() {
      out["\(dst).self_attn.\(n).weight"] = Tensor(shape: [C, C], data: Array(qkv.data[(i * C * C)..<((i + 1) * C * C)]))
      out["\(dst).self_attn.\(n).bias"] = Tensor(shape: [C], data: Array(qb.data[(i * C)..<((i + 1) * C)]))
    }
    out["\(dst).self_attn.out_proj.weight"] = p.tensor(src + "proj.weight")
    out["\(dst).self_attn.out_proj.bias"] = p.tensor(src + "proj.bias")
    out["\(dst).layer_norm1.weight"] = p.tensor(src + "ln1.weight")
    out["\(dst).layer_norm1.bias"] = p.tensor(src + "ln1.bias")
    out["\(dst).layer_norm2.weight"] = p.tensor(src + "ln2.weight")
    out["\(dst).layer_norm2.bias"] = p.tensor(src + "ln2.bias")
    out["\(dst).mlp.fc1.weight"] = p.tensor(src + "fc1.weight")
    out["\(dst).mlp.fc1.bias"] = p.tensor(src + "fc1.bias")
    out["\(dst).mlp.fc2.weight"] = p.tensor(src + "fc2.weight")
    out["\(dst).mlp.fc2.bias"] = p.tensor(src + "fc2.bias")
  }

  /// Imports HF `CLIPModel` tensors (the inverse of ``export()``), for parity tests and for
  /// fine-tuning from an existing checkpoint.
  public func importHF(_ f: SafeTensorsFile) throws {
    let v = config.visionConfig, t = config.textConfig
    func set(_ name: String, _ t: Tensor) {
      let o = params.offset(name)
      params.data.replaceSubrange(o..<(o + t.count), with: t.data)
    }
    set("vision.patch.weight", try f.tensor("vision_model.embeddings.patch_embedding.weight"))
    set("vision.class_embedding", try f.tensor("vision_model.embeddings.class_embedding"))
    set("vision.position_embedding", try f.tensor("vision_model.embeddings.position_embedding.weight"))
    set("vision.pre_ln.weight", try f.tensor("vision_model.pre_layrnorm.weight"))
    set("vision.pre_ln.bias", try f.tensor("vision_model.pre_layrnorm.bias"))
    set("vision.post_ln.weight", try f.tensor("vision_model.post_layernorm.weight"))
    set("vision.post_ln.bias", try f.tensor("vision_model.post_layernorm.bias"))
    set("vision.proj.weight", try f.tensor("visual_projection.weight"))
    set("text.token_embedding", try f.tensor("text_model.embeddings.token_embedding.weight"))
    set("text.position_embedding", try f.tensor("text_model.embeddings.position_embedding.weight"))
    set("text.final_ln.weight", try f.tensor("text_model.final_layer_norm.weight"))
    set("text.final_ln.bias", try f.tensor("text_model.final_layer_norm.bias"))
    set("text.proj.weight", try f.tensor("text_projection.weight"))
    set("logit_scale", try f.tensor("logit_scale"))
    for (src, dst, n) in [
      ("vision.", "vision_model.encoder.layers.", v.numHiddenLayers), ("text.", "text_model.encoder.layers.", t.numHiddenLayers),
    ] {
      for l in 0..<n {
        let s = "\(src)\(l).", d = "\(dst)\(l)"
        let q = try f.tensor(d + ".self_attn.q_proj.weight"), k = try f.tensor(d + ".self_attn.k_proj.weight"),
          vv = try f.tensor(d + ".self_attn.v_proj.weight")
        set(s + "qkv.weight", Tensor(shape: [3 * q.shape[0], q.shape[1]], data: q.data + k.data + vv.data))
        let qb = try f.tensor(d + ".self_attn.q_proj.bias"), kb = try f.tensor(d + ".self_attn.k_proj.bias"),
          vb = try f.tensor(d + ".self_attn.v_proj.bias")
        set(s + "qkv.bias", Tensor(shape: [3 * qb.count], data: qb.data + kb.data + vb.data))
        set(s + "proj.weight", try f.tensor(d + ".self_attn.out_proj.weight"))
        set(s + "proj.bias", try f.tensor(d + ".self_attn.out_proj.bias"))
        set(s + "ln1.weight", try f.tensor(d + ".layer_norm1.weight"))
        set(s + "ln1.bias", try f.tensor(d + ".layer_norm1.bias"))
        set(s + "ln2.weight", try f.tensor(d + ".layer_norm2.weight"))
        set(s + "ln2.bias", try f.tensor(d + ".layer_norm2.bias"))
        set(s + "fc1.weight", try f.tensor(d + ".mlp.fc1.weight"))
        set(s + "fc1.bias", try f.tensor(d + ".mlp.fc1.bias"))
        set(s + "fc2.weight", try f.tensor(d + ".mlp.fc2.weight"))
        set(s + "fc2.bias", try f.tensor(d + ".mlp.fc2.bias"))
      }
    }
  }
}
