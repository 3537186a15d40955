import EosinTensor
import EosinWeights
import Foundation

// The training half of the model types: forward passes that keep what the backward needs (a
// "tape"), and backward passes that accumulate parameter gradients into a value of the same
// model type (its tensors hold gradients; see ``Zeroer``). Inference runs the same forwards
// with the tape dropped, so each architecture exists once. Training supports the layers Eosin
// trains: plain pre-LN blocks in fp32 (no LayerScale, gated MLP or bf16).

/// Sizes `a` to n floats, reusing its storage when the size is unchanged (contents kept).
func buf(_ a: inout [Float], _ n: Int) { if a.count != n { a = [Float](repeating: 0, count: n) } }

/// Sizes `a` to n floats, all zero, reusing its storage when the size is unchanged.
func zeroed(_ a: inout [Float], _ n: Int) {
  if a.count != n {
    a = [Float](repeating: 0, count: n)
  } else {
    a.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
  }
}

extension Linear {
  /// dinp (N,C) += dout (N,OC) @ weight; `g`'s weight and bias += their gradients.
  public func backward(
    _ dinp: UnsafeMutablePointer<Float>?, _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ N: Int,
    grad g: inout Linear
  ) {
    precondition(bf16 == nil, "training runs in fp32")
    let C = inFeatures, OC = outFeatures
    weight.data.withUnsafeBufferPointer { w in
      g.weight.data.withUnsafeMutableBufferPointer { dw in
        if g.bias != nil {
          g.bias!.data.withUnsafeMutableBufferPointer { db in
            matmulBackward(dinp, dw.baseAddress!, db.baseAddress!, dout, inp, w.baseAddress!, N, C, OC)
          }
        } else {
          matmulBackward(dinp, dw.baseAddress!, nil, dout, inp, w.baseAddress!, N, C, OC)
        }
      }
    }
  }
}

extension LayerNorm {
  /// inp (N,C) -> out (N,C), keeping each row's mean and 1/std for ``backward``.
  public func forward(into out: inout [Float], mean: inout [Float], rstd: inout [Float], _ inp: [Float], _ N: Int) {
    let C = weight.count
    buf(&out, N * C)
    buf(&mean, N)
    buf(&rstd, N)
    weight.data.withUnsafeBufferPointer { w in
      bias.data.withUnsafeBufferPointer { b in
        layernormForward(&out, &mean, &rstd, inp, w.baseAddress!, b.baseAddress!, N, C, eps: eps)
      }
    }
  }

  /// dinp (N,C) += the input gradient; `g`'s weight and bias += theirs.
  public func backward(
    _ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ mean: [Float],
    _ rstd: [Float], _ N: Int, grad g: inout LayerNorm
  ) {
    let C = weight.count
    weight.data.withUnsafeBufferPointer { w in
      g.weight.data.withUnsafeMutableBufferPointer { dw in
        g.bias.data.withUnsafeMutableBufferPointer { db in
          layernormBackward(dinp, dw.baseAddress!, db.baseAddress!, dout, inp, w.baseAddress!, mean, rstd, N, C)
        }
      }
    }
  }
}

/// A block's activations from one forward, for its backward, plus the backward's scratch.
/// Reused across steps: fresh multi-megabyte arrays every step cost page faults.
public struct BlockTape: Sendable {
  var B = 0, T = 0
  var xin: [Float] = [], ln1: [Float] = [], mean1: [Float] = [], rstd1: [Float] = [], qkv: [Float] = [], att: [Float] = []
  var atty: [Float] = [], x2: [Float] = [], ln2: [Float] = [], mean2: [Float] = [], rstd2: [Float] = [], h: [Float] = []
  var ha: [Float] = [], o: [Float] = []
  var dha: [Float] = [], dh: [Float] = [], dln2: [Float] = [], datty: [Float] = [], dln1: [Float] = [], dqkv: [Float] = []
  var scratch: [Float] = []
  public init() {}
}

extension TransformerBlock {
  /// x (B,T,C) in place, keeping in `tape` what ``backward(_:tape:into:)`` needs.
  public func forward(_ x: inout [Float], B: Int, T: Int, causal: Bool, tape: inout BlockTape) {
    let N = B * T
    tape.B = B
    tape.T = T
    tape.xin = x
    ln1.forward(into: &tape.ln1, mean: &tape.mean1, rstd: &tape.rstd1, x, N)
    buf(&tape.qkv, N * 3 * C)
    qkv.forward(into: &tape.qkv, tape.ln1, N)
    buf(&tape.atty, N * C)
    buf(&tape.att, B * heads * T * T)
    attentionForward(&tape.atty, &tape.att, tape.qkv, B, T, C, heads, causal: causal)
    buf(&tape.o, N * C)
    proj.forward(into: &tape.o, tape.atty, N)
    if let g = ls1 { TransformerBlock.scaleChannels(&tape.o, g, N) }
    x.withUnsafeMutableBufferPointer { xp in
      tape.o.withUnsafeBufferPointer { residualForward(xp.baseAddress!, $0.baseAddress!, N * C) }
    }
    mlp(&x, N, tape: &tape)
  }

  /// The MLP branch and its residual: `x = x + fc2(act(fc1(ln2(x))))` (gated when ``glu``).
  func mlp(_ x: inout [Float], _ N: Int, tape: inout BlockTape) {
    let I = fc1.outFeatures
    tape.x2 = x
    ln2.forward(into: &tape.ln2, mean: &tape.mean2, rstd: &tape.rstd2, x, N)
    buf(&tape.h, N * I)
    fc1.forward(into: &tape.h, tape.ln2, N)
    if glu {
      let H = I / 2
      buf(&tape.ha, N * H)
      tape.h.withUnsafeBufferPointer { fp in
        tape.ha.withUnsafeMutableBufferPointer { gp in
          for n in 0..<N { activationForward(gp.baseAddress! + n * H, fp.baseAddress! + n * 2 * H, H, act) }
          for n in 0..<N {
            let gate = fp.baseAddress! + n * 2 * H + H, row = gp.baseAddress! + n * H
            for i in 0..<H { row[i] *= gate[i] }
          }
        }
      }
    } else {
      buf(&tape.ha, N * I)
      activationForward(&tape.ha, tape.h, N * I, act)
    }
    buf(&tape.o, N * C)
    fc2.forward(into: &tape.o, tape.ha, N)
    if let g = ls2 { TransformerBlock.scaleChannels(&tape.o, g, N) }
    x.withUnsafeMutableBufferPointer { xp in
      tape.o.withUnsafeBufferPointer { residualForward(xp.baseAddress!, $0.baseAddress!, N * C) }
    }
  }

  /// dx (B,T,C): the gradient of the block's output in, of its input out. Parameter gradients
  /// accumulate into `g`.
  public func backward(_ dx: inout [Float], tape: inout BlockTape, into g: inout TransformerBlock) {
    precondition(!glu && ls1 == nil && ls2 == nil, "training supports plain pre-LN blocks")
    let B = tape.B, T = tape.T, N = B * T, I = fc1.outFeatures
    zeroed(&tape.dha, N * I)
    zeroed(&tape.dh, N * I)
    zeroed(&tape.dln2, N * C)
    zeroed(&tape.datty, N * C)
    zeroed(&tape.dln1, N * C)
    zeroed(&tape.dqkv, N * 3 * C)
    buf(&tape.scratch, B * heads * T * T)
    // MLP branch: out = x2 + fc2(act(fc1(ln2(x2)))).
    fc2.backward(&tape.dha, dx, tape.ha, N, grad: &g.fc2)
    activationBackward(&tape.dh, tape.h, tape.dha, N * I, act)
    fc1.backward(&tape.dln2, tape.dh, tape.ln2, N, grad: &g.fc1)
    ln2.backward(&dx, tape.dln2, tape.x2, tape.mean2, tape.rstd2, N, grad: &g.ln2)
    // Attention branch: x2 = xin + proj(attn(ln1(xin))).
    proj.backward(&tape.datty, dx, tape.atty, N, grad: &g.proj)
    attentionBackward(&tape.dqkv, &tape.scratch, tape.datty, tape.qkv, tape.att, B, T, C, heads)
    qkv.backward(&tape.dln1, tape.dqkv, tape.ln1, N, grad: &g.qkv)
    ln1.backward(&dx, tape.dln1, tape.xin, tape.mean1, tape.rstd1, N, grad: &g.ln1)
  }
}

/// A CLIP image tower's activations from one batched forward.
public struct ViTTape: Sendable {
  var B = 0
  var cols: [Float] = [], pe: [Float] = [], x0: [Float] = [], x: [Float] = [], preMean: [Float] = [], preRstd: [Float] = []
  var blocks: [BlockTape] = []
  var cls: [Float] = [], pooled: [Float] = [], postMean: [Float] = [], postRstd: [Float] = []
  var tissueIn: [Float] = []
  public init() {}
}

extension VisionTransformer {
  /// Training forward of a CLIP image tower (class token, pre-norm, the class token through the
  /// post-norm and the projection), batched: pixels (B,3,S,S) -> projected features (B,D), not
  /// normalised, as ``CLIPModel/imageFeatures(_:batch:)`` gives them.
  public func trainingForward(_ px: [Float], batch B: Int, tape: inout ViTTape) -> [Float] {
    precondition(
      pooling == .projected && registers == nil && classToken != nil && preNorm != nil && finalNorm != nil
        && projection != nil, "training supports CLIP image towers")
    let C = width, T = prefix + (inputSize / patch) * (inputSize / patch)
    tape.B = B
    tape.x0 = px.withUnsafeBufferPointer { embed($0.baseAddress!, B, cols: &tape.cols, pe: &tape.pe) }
    preNorm!.forward(into: &tape.x, mean: &tape.preMean, rstd: &tape.preRstd, tape.x0, B * T)
    if tape.blocks.count != blocks.count { tape.blocks = Array(repeating: BlockTape(), count: blocks.count) }
    for i in blocks.indices { blocks[i].forward(&tape.x, B: B, T: T, causal: false, tape: &tape.blocks[i]) }
    buf(&tape.cls, B * C)
    for b in 0..<B { for i in 0..<C { tape.cls[b * C + i] = tape.x[b * T * C + i] } }
    finalNorm!.forward(into: &tape.pooled, mean: &tape.postMean, rstd: &tape.postRstd, tape.cls, B)
    var out = projection!.forward(tape.pooled, B)
    if let t = tissue {
      tape.tissueIn = t.inputs(batch: px, B, size: inputSize)
      let extra = t.projection.forward(tape.tissueIn, B)
      for i in out.indices { out[i] += extra[i] }
    }
    return out
  }

  /// The backward of ``trainingForward(_:batch:tape:)``: dout (B,D) in; gradients accumulate
  /// into `g`.
  public func trainingBackward(_ dout: [Float], tape: inout ViTTape, into g: inout VisionTransformer) {
    let B = tape.B, C = width, P = patch, NP = (inputSize / P) * (inputSize / P), T = prefix + NP
    var dpooled = [Float](repeating: 0, count: B * C), dcls = dpooled
    projection!.backward(&dpooled, dout, tape.pooled, B, grad: &g.projection!)
    if let t = tissue { t.projection.backward(nil, dout, tape.tissueIn, B, grad: &g.tissue!.projection) }
    finalNorm!.backward(&dcls, dpooled, tape.cls, tape.postMean, tape.postRstd, B, grad: &g.finalNorm!)
    var dx = [Float](repeating: 0, count: B * T * C)
    for b in 0..<B { for i in 0..<C { dx[b * T * C + i] = dcls[b * C + i] } }
    for i in blocks.indices.reversed() { blocks[i].backward(&dx, tape: &tape.blocks[i], into: &g.blocks[i]) }
    var dx0 = [Float](repeating: 0, count: B * T * C)
    preNorm!.backward(&dx0, dx, tape.x0, tape.preMean, tape.preRstd, B * T, grad: &g.preNorm!)
    var dpe = [Float](repeating: 0, count: B * NP * C)
    for b in 0..<B {
      for i in 0..<C { g.classToken!.data[i] += dx0[b * T * C + i] }
      for t in 0..<T {
        for i in 0..<C { g.positions.data[t * C + i] += dx0[(b * T + t) * C + i] }
      }
      for p in 0..<NP { for i in 0..<C { dpe[(b * NP + p) * C + i] = dx0[(b * T + 1 + p) * C + i] } }
    }
    patchLinear.backward(nil, dpe, tape.cols, B * NP, grad: &g.patchLinear)
  }
}

/// A CLIP text tower's activations from one forward.
public struct TextTape: Sendable {
  var B = 0, T = 0
  var ids: [Int32] = [], pos: [Int] = []
  var x: [Float] = [], blocks: [BlockTape] = [], normed: [Float] = [], mean: [Float] = [], rstd: [Float] = []
  var pooled: [Float] = []
  public init() {}
}

extension CLIPModel {
  /// Where each row is pooled: HF's rule, the highest id for the legacy end token 2, else the
  /// first end token (the last position when there is none).
  func poolPositions(_ rows: [[Int32]]) -> [Int] {
    let x = config.textConfig
    return rows.map { row in
      if x.eosTokenId == 2 { return row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }! }
      return row.firstIndex(of: Int32(x.eosTokenId)) ?? (row.count - 1)
    }
  }

  /// The text tower's forward, keeping its activations: ids (B,T) of checked rows -> projected
  /// features (B,D), not normalised.
  public func textForward(_ rows: [[Int32]], tape: inout TextTape) -> [Float] {
    let B = rows.count, T = rows[0].count, C = config.textConfig.hiddenSize
    tape.B = B
    tape.T = T
    tape.ids = rows.flatMap { $0 }
    tape.pos = poolPositions(rows)
    buf(&tape.x, B * T * C)
    tokenEmbedding.data.withUnsafeBufferPointer { w in
      textPositions.data.withUnsafeBufferPointer { p in
        embeddingForward(&tape.x, tape.ids, w.baseAddress!, p.baseAddress!, B, T, C)
      }
    }
    if tape.blocks.count != textBlocks.count { tape.blocks = Array(repeating: BlockTape(), count: textBlocks.count) }
    for i in textBlocks.indices { textBlocks[i].forward(&tape.x, B: B, T: T, causal: true, tape: &tape.blocks[i]) }
    finalLayernorm.forward(into: &tape.normed, mean: &tape.mean, rstd: &tape.rstd, tape.x, B * T)
    buf(&tape.pooled, B * C)
    for b in 0..<B { for i in 0..<C { tape.pooled[b * C + i] = tape.normed[(b * T + tape.pos[b]) * C + i] } }
    return textProjection.forward(tape.pooled, B)
  }

  /// The backward of ``textForward(_:tape:)``: dout (B,D) in; gradients accumulate into `g`'s
  /// text tower.
  public func textBackward(_ dout: [Float], tape: inout TextTape, into g: inout CLIPModel) {
    let B = tape.B, T = tape.T, C = config.textConfig.hiddenSize
    var dpooled = [Float](repeating: 0, count: B * C)
    textProjection.backward(&dpooled, dout, tape.pooled, B, grad: &g.textProjection)
    var dnormed = [Float](repeating: 0, count: B * T * C), dx = dnormed
    for b in 0..<B { for i in 0..<C { dnormed[(b * T + tape.pos[b]) * C + i] = dpooled[b * C + i] } }
    finalLayernorm.backward(&dx, dnormed, tape.x, tape.mean, tape.rstd, B * T, grad: &g.finalLayernorm)
    for i in textBlocks.indices.reversed() { textBlocks[i].backward(&dx, tape: &tape.blocks[i], into: &g.textBlocks[i]) }
    g.tokenEmbedding.data.withUnsafeMutableBufferPointer { dw in
      g.textPositions.data.withUnsafeMutableBufferPointer { dp in
        embeddingBackward(dw.baseAddress!, dp.baseAddress!, dx, tape.ids, B, T, C)
      }
    }
  }
}

extension CLIPModel {
  /// The pair's backward: gradients of the projected image features (B,D), of the projected text
  /// features (B,D) and of the stored log temperature accumulate into `g`.
  public func backward(
    image dimage: [Float], text dtext: [Float], logitScale dls: Float, visionTape: inout ViTTape, textTape: inout TextTape,
    into g: inout CLIPModel
  ) {
    g.logitScale += dls
    vision.trainingBackward(dimage, tape: &visionTape, into: &g.vision)
    textBackward(dtext, tape: &textTape, into: &g)
  }
}

/// A GPT-2 decoder's activations from one batched forward.
public struct GPT2Tape: Sendable {
  var B = 0, L = 0
  var x: [Float] = [], blocks: [BlockTape] = [], normed: [Float] = [], mean: [Float] = [], rstd: [Float] = []
  var logits: [Float] = []
  public init() {}
}

extension GPT2Model {
  /// The decoder on input embeddings (B,L,C) (token embeddings or slide tokens, positions not
  /// yet added) -> logits (B*L,V), keeping its activations in `tape`.
  public func forward(inputs: [Float], batch B: Int, length L: Int, tape: inout GPT2Tape) -> [Float] {
    precondition(L <= contextLength && inputs.count == B * L * channels)
    let C = channels
    tape.B = B
    tape.L = L
    tape.x = inputs
    for b in 0..<B { for t in 0..<L { for i in 0..<C { tape.x[(b * L + t) * C + i] += wpe.data[t * C + i] } } }
    if tape.blocks.count != blocks.count { tape.blocks = Array(repeating: BlockTape(), count: blocks.count) }
    for i in blocks.indices { blocks[i].forward(&tape.x, B: B, T: L, causal: true, tape: &tape.blocks[i]) }
    lnF.forward(into: &tape.normed, mean: &tape.mean, rstd: &tape.rstd, tape.x, B * L)
    return head(tape.normed, B * L)
  }

  /// The backward of ``forward(inputs:batch:length:tape:)``: dlogits (B*L,V) in; returns the
  /// gradient of the input embeddings (B,L,C). Gradients of the positions, blocks, final norm and
  /// the tied head (``wte``) accumulate into `g`.
  public func backward(_ dlogits: [Float], tape: inout GPT2Tape, into g: inout GPT2Model) -> [Float] {
    let B = tape.B, L = tape.L, N = B * L, C = channels, V = vocabSize
    var dnormed = [Float](repeating: 0, count: N * C), dx = dnormed
    wte.data.withUnsafeBufferPointer { w in
      g.wte.data.withUnsafeMutableBufferPointer { dw in
        matmulBackward(&dnormed, dw.baseAddress!, nil, dlogits, tape.normed, w.baseAddress!, N, C, V)
      }
    }
    lnF.backward(&dx, dnormed, tape.x, tape.mean, tape.rstd, N, grad: &g.lnF)
    for i in blocks.indices.reversed() { blocks[i].backward(&dx, tape: &tape.blocks[i], into: &g.blocks[i]) }
    for b in 0..<B { for t in 0..<L { for i in 0..<C { g.wpe.data[t * C + i] += dx[(b * L + t) * C + i] } } }
    return dx
  }
}

extension GPT2Model {
  /// Adds the input gradient of token rows (B,L,C), positions `skip..<L` of each row, into this
  /// accumulator's token embedding (`ids` (B, L - skip)).
  public mutating func accumulateEmbeddingGradient(_ dx: [Float], ids: [Int32], batch B: Int, length L: Int, skip P: Int) {
    let C = channels, T = L - P
    wte.data.withUnsafeMutableBufferPointer { dw in
      for b in 0..<B {
        for t in 0..<T {
          let e = dw.baseAddress! + Int(ids[b * T + t]) * C
          for i in 0..<C { e[i] += dx[(b * L + P + t) * C + i] }
        }
      }
    }
  }
}

/// The projector's activations from one forward.
public struct ProjectorTape: Sendable {
  var N = 0
  var x: [Float] = [], h: [Float] = [], a: [Float] = []
  public init() {}
}

extension Projector {
  /// x (N,inDim) -> (N,outDim), keeping the activations for ``backward(_:tape:into:)``.
  public func forward(_ x: [Float], _ N: Int, tape: inout ProjectorTape) -> [Float] {
    tape.N = N
    tape.x = x
    tape.h = fc1.forward(x, N)
    buf(&tape.a, tape.h.count)
    activationForward(&tape.a, tape.h, tape.h.count, .gelu)
    return fc2.forward(tape.a, N)
  }

  /// dout (N,outDim) in; gradients accumulate into `g`.
  public func backward(_ dout: [Float], tape: inout ProjectorTape, into g: inout Projector) {
    let N = tape.N, H = fc1.outFeatures
    var da = [Float](repeating: 0, count: N * H), dh = da
    fc2.backward(&da, dout, tape.a, N, grad: &g.fc2)
    activationBackward(&dh, tape.h, da, N * H, .gelu)
    fc1.backward(nil, dh, tape.x, N, grad: &g.fc1)
  }
}
