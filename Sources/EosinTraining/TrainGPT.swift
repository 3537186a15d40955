import EosinModels
import EosinTensor
import EosinWeights
import Foundation

/// A GPT-2 style decoder for training, with the slide-token projector (Linear-GELU-Linear from
/// image-embedding width to decoder width) in the same parameter set. Inputs are an optional
/// prefix of image embeddings (projected to slide tokens) followed by text tokens; the loss is
/// cross-entropy on the text targets (-1 = ignored). ``export()`` writes HF `GPT2LMHeadModel`
/// names (Conv1D layout) and LLaVA-style `mm_projector.*` names.
public final class TrainGPT {
  public let config: GPT2Config
  public let imageDim: Int
  public let projectorHidden: Int
  public let params = ParameterSet()
  let blocks: [TrainBlock]
  let wte: Int, wpe: Int, lnfw: Int, lnfb: Int, p1w: Int, p1b: Int, p2w: Int, p2b: Int

  public init(config cfg: GPT2Config, imageDim: Int, projectorHidden: Int, seed: UInt64) {
    config = cfg
    self.imageDim = imageDim
    self.projectorHidden = projectorHidden
    var ri = RandomInit(seed: seed, layers: cfg.nLayer)
    let p = params, C = cfg.nEmbd
    func add(_ n: String, _ s: [Int]) -> Int { p.add(n, ri.make(n, s)) }
    wte = add("wte", [cfg.vocabSize, C])
    wpe = add("wpe", [cfg.nPositions, C])
    blocks = (0..<cfg.nLayer).map {
      TrainBlock(p, "h.\($0).", C: C, I: cfg.nInner ?? 4 * C, NH: cfg.nHead, act: .geluTanh, source: &ri)
    }
    lnfw = add("ln_f.weight", [C]); lnfb = add("ln_f.bias", [C])
    p1w = add("projector.0.weight", [projectorHidden, imageDim]); p1b = add("projector.0.bias", [projectorHidden])
    p2w = add("projector.2.weight", [C, projectorHidden]); p2b = add("projector.2.bias", [C])
  }

  /// Forward and backward on B sequences of equal length: `prefix[b]` image embeddings (P,
  /// imageDim) each (the same P for every row, may be 0), then `ids[b]` (T) with `targets[b]` (T).
  /// Gradients accumulate. Returns the mean loss over counted targets.
  public func step(prefix: [[Float]], prefixLength P: Int, ids: [[Int32]], targets: [[Int32]], train: Bool = true) -> Float {
    let B = ids.count, T = ids[0].count, L = P + T, C = config.nEmbd, V = config.vocabSize, H = projectorHidden, Di = imageDim
    precondition(L <= config.nPositions)
    let N = B * L
    // Embeddings: projected prefix, then tokens; positions over the whole row.
    var x = [Float](repeating: 0, count: N * C)
    var pin: [Float] = [], ph: [Float] = [], pha: [Float] = []
    if P > 0 {
      pin = prefix.flatMap { $0 }
      ph = [Float](repeating: 0, count: B * P * H)
      pha = ph
      var po = [Float](repeating: 0, count: B * P * C)
      params.data.withUnsafeBufferPointer { wb in
        let W = wb.baseAddress!
        matmulForward(&ph, pin, W + p1w, W + p1b, B * P, Di, H)
        activationForward(&pha, ph, B * P * H, .gelu)
        matmulForward(&po, pha, W + p2w, W + p2b, B * P, H, C)
      }
      for b in 0..<B { for i in 0..<(P * C) { x[b * L * C + i] = po[b * P * C + i] } }
    }
    let flatIDs = ids.flatMap { $0 }
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      for b in 0..<B {
        for t in 0..<T {
          let e = W + wte + Int(flatIDs[b * T + t]) * C
          for i in 0..<C { x[(b * L + P + t) * C + i] = e[i] }
        }
        for t in 0..<L { for i in 0..<C { x[(b * L + t) * C + i] += W[wpe + t * C + i] } }
      }
    }
    for blk in blocks { blk.forward(&x, B: B, T: L, causal: true) }
    var hf = [Float](repeating: 0, count: N * C), mean = [Float](repeating: 0, count: N), rstd = mean
    var logits = [Float](repeating: 0, count: N * V)
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      layernormForward(&hf, &mean, &rstd, x, W + lnfw, W + lnfb, N, C)
      matmulForward(&logits, hf, W + wte, nil, N, C, V)
    }
    // Targets over the whole row: prefix positions ignored.
    var tg = [Int32](repeating: -1, count: N)
    for b in 0..<B { for t in 0..<T { tg[b * L + P + t] = targets[b][t] } }
    var dlogits = [Float](repeating: 0, count: train ? N * V : 0)
    let loss =
      train ? crossEntropyForwardBackward(&dlogits, logits, tg, N, V) : crossEntropyForwardBackward(nil, logits, tg, N, V)
    if !train { return loss }
    var dhf = [Float](repeating: 0, count: N * C), dx = dhf
    params.data.withUnsafeBufferPointer { wb in
      params.grad.withUnsafeMutableBufferPointer { gb in
        let W = wb.baseAddress!, G = gb.baseAddress!
        matmulBackward(&dhf, G + wte, nil, dlogits, hf, W + wte, N, C, V)
        layernormBackward(&dx, G + lnfw, G + lnfb, dhf, x, W + lnfw, mean, rstd, N, C)
      }
    }
    for blk in blocks.reversed() { blk.backward(&dx) }
    params.data.withUnsafeBufferPointer { wb in
      params.grad.withUnsafeMutableBufferPointer { gb in
        let W = wb.baseAddress!, G = gb.baseAddress!
        for b in 0..<B {
          for t in 0..<L { for i in 0..<C { G[wpe + t * C + i] += dx[(b * L + t) * C + i] } }
          for t in 0..<T {
            let e = G + wte + Int(flatIDs[b * T + t]) * C
            for i in 0..<C { e[i] += dx[(b * L + P + t) * C + i] }
          }
        }
        if P > 0 {
          var dpo = [Float](repeating: 0, count: B * P * C), dpha = [Float](repeating: 0, count: B * P * H), dph = dpha
          for b in 0..<B { for i in 0..<(P * C) { dpo[b * P * C + i] = dx[b * L * C + i] } }
          matmulBackward(&dpha, G + p2w, G + p2b, dpo, pha, W + p2w, B * P, H, C)
          activationBackward(&dph, ph, dpha, B * P * H, .gelu)
          matmulBackward(nil, G + p1w, G + p1b, dph, pin, W + p1w, B * P, Di, H)
        }
      }
    }
    return loss
  }

  /// HF GPT2LMHeadModel tensors (Conv1D weights (C, OC): the one transpose back) plus the
  /// projector as `mm_projector.0.*` / `mm_projector.2.*`.
  public func export(gradients: Bool = false) -> (decoder: [String: Tensor], projector: [String: Tensor]) {
    let p = gradients ? params.gradientView() : params
    var d: [String: Tensor] = [:]
    d["transformer.wte.weight"] = p.tensor("wte")
    d["transformer.wpe.weight"] = p.tensor("wpe")
    d["transformer.ln_f.weight"] = p.tensor("ln_f.weight")
    d["transformer.ln_f.bias"] = p.tensor("ln_f.bias")
    func conv(_ t: Tensor) -> Tensor {
      let OC = t.shape[0], C = t.shape[1]
      var o = [Float](repeating: 0, count: OC * C)
      for r in 0..<OC { for c in 0..<C { o[c * OC + r] = t.data[r * C + c] } }
      return Tensor(shape: [C, OC], data: o)
    }
    for l in 0..<config.nLayer {
      let s = "h.\(l).", t = "transformer.h.\(l)."
      d[t + "ln_1.weight"] = p.tensor(s + "ln1.weight")
      d[t + "ln_1.bias"] = p.tensor(s + "ln1.bias")
      d[t + "ln_2.weight"] = p.tensor(s + "ln2.weight")
      d[t + "ln_2.bias"] = p.tensor(s + "ln2.bias")
      d[t + "attn.c_attn.weight"] = conv(p.tensor(s + "qkv.weight"))
      d[t + "attn.c_attn.bias"] = p.tensor(s + "qkv.bias")
      d[t + "attn.c_proj.weight"] = conv(p.tensor(s + "proj.weight"))
      d[t + "attn.c_proj.bias"] = p.tensor(s + "proj.bias")
      d[t + "mlp.c_fc.weight"] = conv(p.tensor(s + "fc1.weight"))
      d[t + "mlp.c_fc.bias"] = p.tensor(s + "fc1.bias")
      d[t + "mlp.c_proj.weight"] = conv(p.tensor(s + "fc2.weight"))
      d[t + "mlp.c_proj.bias"] = p.tensor(s + "fc2.bias")
    }
    let pr: [String: Tensor] = [
      "mm_projector.0.weight": p.tensor("projector.0.weight"), "mm_projector.0.bias": p.tensor("projector.0.bias"),
      "mm_projector.2.weight": p.tensor("projector.2.weight"), "mm_projector.2.bias": p.tensor("projector.2.bias"),
    ]
    return (d, pr)
  }

  /// Loads HF GPT2LMHeadModel tensors (the inverse of ``export()``); the projector keeps its
  /// initialisation.
  public func importHF(_ f: SafeTensorsFile) throws {
    func set(_ name: String, _ t: Tensor) {
      let o = params.offset(name)
      params.data.replaceSubrange(o..<(o + t.count), with: t.data)
    }
    func unconv(_ t: Tensor) -> Tensor {
      let C = t.shape[0], OC = t.shape[1]
      var o = [Float](repeating: 0, count: OC * C)
      for c in 0..<C { for r in 0..<OC { o[r * C + c] = t.data[c * OC + r] } }
      return Tensor(shape: [OC, C], data: o)
    }
    set("wte", try f.tensor("transformer.wte.weight"))
    set("wpe", try f.tensor("transformer.wpe.weight"))
    set("ln_f.weight", try f.tensor("transformer.ln_f.weight"))
    set("ln_f.bias", try f.tensor("transformer.ln_f.bias"))
    for l in 0..<config.nLayer {
      let s = "h.\(l).", t = "transformer.h.\(l)."
      set(s + "ln1.weight", try f.tensor(t + "ln_1.weight"))
      set(s + "ln1.bias", try f.tensor(t + "ln_1.bias"))
      set(s + "ln2.weight", try f.tensor(t + "ln_2.weight"))
      set(s + "ln2.bias", try f.tensor(t + "ln_2.bias"))
      set(s + "qkv.weight", unconv(try f.tensor(t + "attn.c_attn.weight")))
      set(s + "qkv.bias", try f.tensor(t + "attn.c_attn.bias"))
      set(s + "proj.weight", unconv(try f.tensor(t + "attn.c_proj.weight")))
      set(s + "proj.bias", try f.tensor(t + "attn.c_proj.bias"))
      set(s + "fc1.weight", unconv(try f.tensor(t + "mlp.c_fc.weight")))
      set(s + "fc1.bias", try f.tensor(t + "mlp.c_fc.bias"))
      set(s + "fc2.weight", unconv(try f.tensor(t + "mlp.c_proj.weight")))
      set(s + "fc2.bias", try f.tensor(t + "mlp.c_proj.bias"))
    }
  }
}
