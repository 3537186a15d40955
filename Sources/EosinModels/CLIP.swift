import EosinTensor
import EosinWeights
import Foundation

/// A CLIP model: ViT image tower, causal text tower, and the two projections into one embedding
/// space. Reads HF `CLIPModel` checkpoints with their tensor names verbatim (PLIP and QuiltNet
/// in HF format load as they are).
///
/// Thread-safe: encoding only reads weights, so several threads may encode at once.
public struct CLIPModel: Sendable {
  public let config: CLIPConfig
  // Vision tower.
  let classEmbedding: Tensor  // (C)
  let patchEmbedding: Tensor  // (C, 3*P*P), conv weight flattened
  let visionPositions: Tensor  // (NP+1, C)
  let preLayernorm: LayerNorm
  let visionBlocks: [TransformerBlock]
  let postLayernorm: LayerNorm
  let visualProjection: Linear
  // Text tower.
  let tokenEmbedding: Tensor  // (V, C)
  let textPositions: Tensor  // (maxT, C)
  let textBlocks: [TransformerBlock]
  let finalLayernorm: LayerNorm
  let textProjection: Linear
  /// The learned temperature, stored as its log.
  public let logitScale: Float

  /// Loads an HF CLIPModel checkpoint. Takes exactly the names in the table below; any other
  /// tensor (except `position_ids` buffers) is an error naming it.
  public init(checkpoint: Checkpoint) throws {
    var t = TensorTable(checkpoint.weights)
    try self.init(config: try checkpoint.config(CLIPConfig.self), source: &t)
    try t.finish(ignoring: ["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"])
  }

  /// The tensor-name table: every tensor an HF CLIPModel checkpoint holds, with its shape, taken
  /// from `source` (a checkpoint, or ``RandomTensors`` for fresh weights).
  public init<S: TensorSource>(config cfg: CLIPConfig, source t: inout S) throws {
    config = cfg
    let v = cfg.visionConfig, x = cfg.textConfig
    guard v.hiddenSize % v.numAttentionHeads == 0, x.hiddenSize % x.numAttentionHeads == 0, v.imageSize % v.patchSize == 0 else {
      throw ModelError.config("hidden size must divide by heads and image size by patch size")
    }
    let C = v.hiddenSize, P = v.patchSize, NP = (v.imageSize / P) * (v.imageSize / P)
    classEmbedding = try t.take("vision_model.embeddings.class_embedding", [C])
    patchEmbedding = try t.take("vision_model.embeddings.patch_embedding.weight", [C, v.numChannels, P, P]).reshaped([
      C, v.numChannels * P * P,
    ])
    visionPositions = try t.take("vision_model.embeddings.position_embedding.weight", [NP + 1, C])
    preLayernorm = try LayerNorm.load(&t, "vision_model.pre_layrnorm", C, eps: v.layerNormEps)
    visionBlocks = try (0..<v.numHiddenLayers).map {
      try CLIPModel.block(
        &t, "vision_model.encoder.layers.\($0)", C, v.intermediateSize, v.numAttentionHeads, v.hiddenAct, v.layerNormEps)
    }
    postLayernorm = try LayerNorm.load(&t, "vision_model.post_layernorm", C, eps: v.layerNormEps)
    visualProjection = try Linear.load(&t, "visual_projection", C, cfg.projectionDim, bias: false)
    let TC = x.hiddenSize
    tokenEmbedding = try t.take("text_model.embeddings.token_embedding.weight", [x.vocabSize, TC])
    textPositions = try t.take("text_model.embeddings.position_embedding.weight", [x.maxPositionEmbeddings, TC])
    textBlocks = try (0..<x.numHiddenLayers).map {
      try CLIPModel.block(
        &t, "text_model.encoder.layers.\($0)", TC, x.intermediateSize, x.numAttentionHeads, x.hiddenAct, x.layerNormEps)
    }
    finalLayernorm = try LayerNorm.load(&t, "text_model.final_layer_norm", TC, eps: x.layerNormEps)
    textProjection = try Linear.load(&t, "text_projection", TC, cfg.projectionDim, bias: false)
    logitScale = try t.take("logit_scale", []).data[0]
  }

  /// HF CLIP encoder layer names -> a fused-QKV block. The one place q/k/v are concatenated.
  static func block<S: TensorSource>(_ t: inout S, _ p: String, _ C: Int, _ I: Int, _ NH: Int, _ act: String, _ eps: Float) throws
    -> TransformerBlock
  {
    let q = try Linear.load(&t, p + ".self_attn.q_proj", C, C)
    let k = try Linear.load(&t, p + ".self_attn.k_proj", C, C)
    let v = try Linear.load(&t, p + ".self_attn.v_proj", C, C)
    let qkv = Linear(
      weight: Tensor(shape: [3 * C, C], data: q.weight.data + k.weight.data + v.weight.data),
      bias: Tensor(shape: [3 * C], data: q.bias!.data + k.bias!.data + v.bias!.data))
    return TransformerBlock(
      ln1: try LayerNorm.load(&t, p + ".layer_norm1", C, eps: eps), qkv: qkv,
      proj: try Linear.load(&t, p + ".self_attn.out_proj", C, C),
      ln2: try LayerNorm.load(&t, p + ".layer_norm2", C, eps: eps), fc1: try Linear.load(&t, p + ".mlp.fc1", C, I),
      fc2: try Linear.load(&t, p + ".mlp.fc2", I, C), act: try activation(act), heads: NH)
  }

  /// Image side the vision tower expects.
  public var imageSize: Int { config.visionConfig.imageSize }
  /// Width of the shared embedding space.
  public var embedDim: Int { config.projectionDim }

  /// Projected image features (not normalised). pixels (B,3,S,S) preprocessed -> (B,D).
  /// Runs one image per core (see ``parallelFor(_:workers:_:)``) when `parallel` and B > 1.
  public func imageFeatures(_ pixels: [Float], batch B: Int, parallel: Bool = true) -> [Float] {
    let S = imageSize, per = 3 * S * S, D = embedDim
    precondition(pixels.count == B * per, "pixels must be (B,3,\(S),\(S))")
    var out = [Float](repeating: 0, count: B * D)
    if parallel && B > 1 {
      let chunks = UnsafeMutableBufferPointer<Float>.allocate(capacity: B * D)
      defer { chunks.deallocate() }
      pixels.withUnsafeBufferPointer { px in
        parallelFor(B) { b in
          let f = encodeImages(UnsafeBufferPointer(rebasing: px[(b * per)..<((b + 1) * per)]), 1)
          for i in 0..<D { chunks[b * D + i] = f[i] }
        }
      }
      for i in 0..<(B * D) { out[i] = chunks[i] }
    } else {
      out = pixels.withUnsafeBufferPointer { encodeImages($0, B) }
    }
    return out
  }

  /// Normalised image embeddings (B,D).
  public func imageEmbeddings(_ pixels: [Float], batch B: Int, parallel: Bool = true) -> [Float] {
    var f = imageFeatures(pixels, batch: B, parallel: parallel)
    f.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, B, embedDim) }
    return f
  }

  /// The vision tower on B images at once: patch embed, class token, positions, pre-LN, blocks,
  /// post-LN on the class token, projection.
  func encodeImages(_ px: UnsafeBufferPointer<Float>, _ B: Int) -> [Float] {
    let v = config.visionConfig
    let S = v.imageSize, P = v.patchSize, G = S / P, NP = G * G, C = v.hiddenSize, K = v.numChannels * P * P
    let T = NP + 1
    // im2col: patches (B*NP, K) in (channel, py, px) order, matching the conv weight.
    var cols = [Float](repeating: 0, count: B * NP * K)
    cols.withUnsafeMutableBufferPointer { c in
      for b in 0..<B {
        for gy in 0..<G {
          for gx in 0..<G {
            let row = c.baseAddress! + ((b * NP) + gy * G + gx) * K
            var k = 0
            for ch in 0..<v.numChannels {
              for py in 0..<P {
                let src = px.baseAddress! + b * v.numChannels * S * S + ch * S * S + (gy * P + py) * S + gx * P
                for pxx in 0..<P { row[k + pxx] = src[pxx] }
                k += P
              }
            }
          }
        }
      }
    }
    var pe = [Float](repeating: 0, count: B * NP * C)
    pe.withUnsafeMutableBufferPointer { o in
      cols.withUnsafeBufferPointer { c in
        patchEmbedding.data.withUnsafeBufferPointer { w in
          matmulForward(o.baseAddress!, c.baseAddress!, w.baseAddress!, nil, B * NP, K, C)
        }
      }
    }
    var x = [Float](repeating: 0, count: B * T * C)
    for b in 0..<B {
      for i in 0..<C { x[b * T * C + i] = classEmbedding.data[i] + visionPositions.data[i] }
      for p in 0..<NP {
        let dst = b * T * C + (p + 1) * C, src = (b * NP + p) * C, pos = (p + 1) * C
        for i in 0..<C { x[dst + i] = pe[src + i] + visionPositions.data[pos + i] }
      }
    }
    x = preLayernorm.forward(x, B * T)
    for blk in visionBlocks { blk.forward(&x, B: B, T: T, causal: false) }
    var cls = [Float](repeating: 0, count: B * C)
    for b in 0..<B { for i in 0..<C { cls[b * C + i] = x[b * T * C + i] } }
    let pooled = postLayernorm.forward(cls, B)
    return visualProjection.forward(pooled, B)
  }

  /// Projected text features (not normalised). ids (B,T), each row holding its end token;
  /// pooled at the end token (HF's rule: argmax id for legacy eos 2, else the first eos).
  /// - Throws: ``ModelError/input`` when T exceeds the context or an id is out of range.
  public func textFeatures(_ ids: [[Int32]]) throws -> [Float] {
    let x = config.textConfig
    let B = ids.count
    guard let T = ids.first?.count, ids.allSatisfy({ $0.count == T }), T > 0 else {
      throw ModelError.input("token rows must be non-empty and equal length")
    }
    guard T <= x.maxPositionEmbeddings else {
      throw ModelError.input("\(T) tokens exceed the context of \(x.maxPositionEmbeddings)")
    }
    let C = x.hiddenSize
    let flat = ids.flatMap { $0 }
    guard flat.allSatisfy({ $0 >= 0 && Int($0) < x.vocabSize }) else {
      throw ModelError.input("token id outside the vocabulary of \(x.vocabSize)")
    }
    var h = [Float](repeating: 0, count: B * T * C)
    h.withUnsafeMutableBufferPointer { o in
      flat.withUnsafeBufferPointer { i in
        tokenEmbedding.data.withUnsafeBufferPointer { w in
          textPositions.data.withUnsafeBufferPointer { p in
            embeddingForward(o.baseAddress!, i.baseAddress!, w.baseAddress!, p.baseAddress!, B, T, C)
          }
        }
      }
    }
    for blk in textBlocks { blk.forward(&h, B: B, T: T, causal: true) }
    h = finalLayernorm.forward(h, B * T)
    var pooled = [Float](repeating: 0, count: B * C)
    for b in 0..<B {
      let row = ids[b]
      let pos: Int
      if x.eosTokenId == 2 {
        pos = row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }!
      } else {
        pos = row.firstIndex(of: Int32(x.eosTokenId)) ?? (T - 1)
      }
      for i in 0..<C { pooled[b * C + i] = h[(b * T + pos) * C + i] }
    }
    return textProjection.forward(pooled, B)
  }

  /// Normalised text embeddings (B,D).
  public func textEmbeddings(_ ids: [[Int32]]) throws -> [Float] {
    var f = try textFeatures(ids)
    f.withUnsafeMutableBufferPointer { l2normForward($0.baseAddress!, nil, $0.baseAddress!, ids.count, embedDim) }
    return f
  }

  /// `exp(logit_scale) * image @ text^T` for normalised embeddings: (NI,D) x (NT,D) -> (NI,NT).
  public func logits(images: [Float], texts: [Float]) -> [Float] {
    let D = embedDim, NI = images.count / D, NT = texts.count / D
    var out = [Float](repeating: 0, count: NI * NT)
    out.withUnsafeMutableBufferPointer { o in
      images.withUnsafeBufferPointer { a in
        texts.withUnsafeBufferPointer { b in
          sgemmNT(o.baseAddress!, a.baseAddress!, b.baseAddress!, NI, NT, D, alpha: expf(logitScale))
        }
      }
    }
    return out
  }
}
