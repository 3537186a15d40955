import EosinModels
import EosinPipelines
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// One slide-conditioned conversation for the language model: the image embeddings that become
/// slide tokens, the question, and the answer the model should give.
public struct SlideConversation: Sendable {
  /// (P, imageDim) tile embeddings: the tile tokens, then the slide's mean.
  public var prefix: [Float]
  public var question: String
  public var answer: String
  public init(prefix: [Float], question: String, answer: String) {
    self.prefix = prefix
    self.question = question
    self.answer = answer
  }
}

/// Trains the slide-token projector (LLaVA-style Linear-GELU-Linear from the CLIP embedding
/// width to the language model's width) with the language model frozen: each conversation is
/// rendered with the model's chat template, the projected slide tokens are spliced into the user
/// turn where ``slideMarker`` stands, and the loss is the cross-entropy of the answer's tokens.
/// The gradient reaches the slide tokens through ``LlamaModel/inputGradient(embeddings:count:targets:)``
/// and the projector through its own backward. Tensor names are LLaVA's (`mm_projector.0.*`,
/// `mm_projector.2.*`), the names ``Projector`` loads.
public final class LMProjectorTrainer {
  public let lm: LanguageModel
  /// The language model with its matrices dequantised once (fp32), for forward and backward.
  let model: LlamaModel
  public let params = ParameterSet()
  public let imageDim: Int
  public let hidden: Int
  let w1: Int, b1: Int, w2: Int, b2: Int
  /// Where the slide tokens go in the user turn: chat's marker.
  public static let slideMarker = ChatSession.slideMarker
  /// The system turn every conversation starts with (chat uses the same opening).
  public var system = "You are Eosin, a careful assistant for pathologists. Answer in two or three sentences."

  /// - Throws: ``PipelineError`` when the model has no chat template.
  public init(lm: LanguageModel, imageDim: Int, hidden: Int = 1024, seed: UInt64 = 1) throws {
    guard lm.template != nil else { throw PipelineError.input("\(lm.path): the language model has no chat template") }
    self.lm = lm
    model = lm.model.dense()
    self.imageDim = imageDim
    self.hidden = hidden
    let C = lm.model.config.channels
    var r = RandomTensors(seed: seed)
    // Xavier-like scales, so the slide tokens start near the size of token embeddings.
    r.std = 1 / Float(imageDim).squareRoot()
    w1 = params.add("mm_projector.0.weight", try r.take("mm_projector.0.weight", [hidden, imageDim]))
    b1 = params.add("mm_projector.0.bias", Tensor(zeros: [hidden]))
    r.std = 0.5 / Float(hidden).squareRoot()
    w2 = params.add("mm_projector.2.weight", try r.take("mm_projector.2.weight", [C, hidden]))
    b2 = params.add("mm_projector.2.bias", Tensor(zeros: [C]))
  }

  /// The token ids around the slide tokens and the answer's targets for one conversation:
  /// `before` (system turn and the user turn up to the marker), `after` (the rest of the user
  /// turn and the assistant opening), `answer` (its tokens and the end-of-turn token).
  public func tokens(question: String, answer: String) -> (before: [Int32], after: [Int32], answer: [Int32]) {
    let tmpl = lm.template!
    let text = tmpl.render(
      [(role: "system", content: system), (role: "user", content: "Slide tiles: \(Self.slideMarker)\n\(question)")],
      generationPrompt: true)
    let tok = lm.tokenizer
    let (before, after) = GroundedLM.encodeAroundSlide(text, tok, addSpecial: true)
    var ans = tok.encodeLlama(answer, addSpecial: false, parseSpecial: false)
    if let end = tok.special["<|im_end|>"] ?? tok.special["<|eot_id|>"] ?? tok.eos { ans.append(end) }
    return (before, after, ans)
  }

  /// The slide tokens for `prefix` (P, imageDim): (P, C), with the hidden pre-activations.
  func project(_ x: [Float], _ P: Int) -> (h: [Float], a: [Float], y: [Float]) {
    let C = lm.model.config.channels, H = hidden, D = imageDim
    var h = [Float](repeating: 0, count: P * H), a = h, y = [Float](repeating: 0, count: P * C)
    params.data.withUnsafeBufferPointer { wb in
      let W = wb.baseAddress!
      matmulForward(&h, x, W + w1, W + b1, P, D, H)
      activationForward(&a, h, P * H, .gelu)
      matmulForward(&y, a, W + w2, W + b2, P, H, C)
    }
    return (h, a, y)
  }

  /// Forward and backward on conversations; projector gradients accumulate in ``params`` (mean
  /// over the conversations). Returns the mean loss.
  public func step(_ batch: [SlideConversation]) throws -> Float {
    let C = lm.model.config.channels, H = hidden, D = imageDim
    var total: Float = 0
    for ex in batch {
      let P = ex.prefix.count / D
      let (before, after, answer) = tokens(question: ex.question, answer: ex.answer)
      let (h, a, y) = project(ex.prefix, P)
      let ids = before + after + answer
      let embedded = model.embed(ids)
      let nb = before.count, T = ids.count + P
      var x = [Float](repeating: 0, count: T * C)
      x.replaceSubrange(0..<(nb * C), with: embedded[0..<(nb * C)])
      x.replaceSubrange((nb * C)..<((nb + P) * C), with: y)
      x.replaceSubrange(((nb + P) * C)..<(T * C), with: embedded[(nb * C)...])
      // Targets: each answer token is predicted from the position before it.
      var targets = [Int32](repeating: -1, count: T)
      let firstAnswer = nb + P + after.count
      for i in 0..<answer.count { targets[firstAnswer - 1 + i] = answer[i] }
      let r = try model.inputGradient(embeddings: x, count: T, targets: targets)
      total += r.loss
      let scale = 1 / Float(batch.count)
      let dy = r.grad[(nb * C)..<((nb + P) * C)].map { $0 * scale }
      var da = [Float](repeating: 0, count: P * H), dh = da
      params.data.withUnsafeBufferPointer { wb in
        params.grad.withUnsafeMutableBufferPointer { gb in
          let W = wb.baseAddress!, G = gb.baseAddress!
          matmulBackward(&da, G + w2, G + b2, dy, a, W + w2, P, H, C)
          activationBackward(&dh, h, da, P * H, .gelu)
          matmulBackward(nil, G + w1, G + b1, dh, ex.prefix, W + w1, P, D, H)
        }
      }
    }
    return total / Float(max(batch.count, 1))
  }

  /// The mean loss on conversations, without gradients.
  public func loss(_ batch: [SlideConversation]) throws -> Float {
    let saved = params.grad
    defer { params.grad = saved }
    return try step(batch)
  }

  /// The projector under LLaVA's names, for ``Projector/init(file:inDim:hidden:outDim:)``.
  public func export() -> [String: Tensor] {
    var out: [String: Tensor] = [:]
    for n in ["mm_projector.0.weight", "mm_projector.0.bias", "mm_projector.2.weight", "mm_projector.2.bias"] {
      out[n] = params.tensor(n)
    }
    return out
  }
}
