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
  /// The inference projector the steps run; its weights are copied from ``params`` first.
  var projector: Projector
  var grads: Projector
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
    let w1 = try r.take("mm_projector.0.weight", [hidden, imageDim])
    r.std = 0.5 / Float(hidden).squareRoot()
    let w2 = try r.take("mm_projector.2.weight", [C, hidden])
    projector = Projector(
      fc1: Linear(weight: w1, bias: Tensor(zeros: [hidden])), fc2: Linear(weight: w2, bias: Tensor(zeros: [C])))
    var adder = ParameterAdder(params: params)
    try projector.visitParameters(&adder)
    grads = projector
    var z = Zeroer()
    try grads.visitParameters(&z)
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

  /// Forward and backward on conversations; projector gradients accumulate in ``params`` (mean
  /// over the conversations). Returns the mean loss.
  public func step(_ batch: [SlideConversation]) throws -> Float {
    let C = lm.model.config.channels, D = imageDim
    var reader = ParameterReader(params: params)
    try projector.visitParameters(&reader)
    var tape = ProjectorTape()
    var total: Float = 0
    for ex in batch {
      let P = ex.prefix.count / D
      let (before, after, answer) = tokens(question: ex.question, answer: ex.answer)
      let y = projector.forward(ex.prefix, P, tape: &tape)
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
      projector.backward(dy, tape: &tape, into: &grads)
    }
    var gather = GradientGatherer(params: params)
    try grads.visitParameters(&gather)
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
    var p = projector
    var reader = ParameterReader(params: params)
    try! p.visitParameters(&reader)
    var recorder = TensorRecorder()
    try! p.visitParameters(&recorder)
    return recorder.tensors
  }
}
