import EosinTokenizer
import Foundation

/// Builds instruction-tuning examples from CLIP image embeddings of labelled tiles, in the shape
/// chat builds its prefix at inference (``tileTokens`` tile embeddings, then the mean of every
/// tile of the slide as a global token).
///
/// Each example is one of:
/// - a single tile (its embedding repeated, as chat does for a one-tile input);
/// - a pseudo-slide: ``pseudoSlideTiles`` tiles drawn from one group (LC25000) or case (EBHI),
///   of which ``tileTokens`` become tile tokens and all of them make the global mean;
/// - non-tissue: blank, noise, blurred or background images, singly or as a pseudo-slide, whose
///   answers say there is no interpretable tissue.
///
/// Deterministic: the example for (step, slot) depends only on the seed.
public struct InstructionSampler: Sendable {
  /// Embedding width.
  public let dim: Int
  /// Tile tokens before the global token (chat's tiles per question).
  public var tileTokens = 4
  /// How many tiles a pseudo-slide has (before limiting to its group's size).
  public var pseudoSlideTiles: ClosedRange<Int> = 4...16
  /// Share of tissue examples that are pseudo-slides rather than single tiles.
  public var pseudoSlideShare: Float = 0.5
  /// Share of examples that are non-tissue.
  public var nonTissueShare: Float = 0.1
  /// Token length of each conversation.
  public var length = 48
  public var seed: UInt64 = 1

  let embeddings: [Float]
  let labels: [Int]
  let groups: [String]
  let members: [String: [Int]]
  let nonTissue: [Float]
  let nonTissueClass: Int
  let classes: [KnowledgeClass]
  let tokenizer: Tokenizer

  /// - Parameters:
  ///   - embeddings: (N, dim) tile embeddings; `labels` (N) index `classes`; `groups` (N) name
  ///     each tile's group or case.
  ///   - nonTissue: (M, dim) embeddings of non-tissue images, answered as class `nonTissueClass`.
  /// - Throws: ``TrainingError/data(_:)`` when there are no tiles or no non-tissue images.
  public init(
    embeddings: [Float], labels: [Int], groups: [String], nonTissue: [Float], nonTissueClass: Int, classes: [KnowledgeClass],
    dim: Int, tokenizer: Tokenizer
  ) throws {
    guard !labels.isEmpty, embeddings.count == labels.count * dim, groups.count == labels.count else {
      throw TrainingError.data("instruction tuning needs at least one embedded tile with a label and a group")
    }
    guard nonTissue.count >= dim, nonTissue.count % dim == 0 else {
      throw TrainingError.data("instruction tuning needs at least one non-tissue image")
    }
    self.embeddings = embeddings
    self.labels = labels
    self.groups = groups
    self.nonTissue = nonTissue
    self.nonTissueClass = nonTissueClass
    self.classes = classes
    self.dim = dim
    self.tokenizer = tokenizer
    var m: [String: [Int]] = [:]
    for (i, g) in groups.enumerated() { m[g, default: []].append(i) }
    members = m
  }

  /// The inputs of one example: its class and the rows (of the tile or non-tissue table) that
  /// make it. Single inputs have one row.
  public func draw(step: Int, slot: Int) -> (cls: Int, nonTissue: Bool, rows: [Int]) {
    var r = rng(step, slot)
    return draw(&r)
  }

  func rng(_ step: Int, _ slot: Int) -> SeededRNG {
    SeededRNG(seed: seed &+ UInt64(step * 64 + slot) &* 0x2545_F491_4F6C_DD1D)
  }

  func draw(_ r: inout SeededRNG) -> (cls: Int, nonTissue: Bool, rows: [Int]) {
    let nt = r.uniform() < nonTissueShare
    let pseudo = r.uniform() < pseudoSlideShare
    let size = pseudoSlideTiles.lowerBound + Int(r.next() % UInt64(pseudoSlideTiles.count))
    if nt {
      let M = nonTissue.count / dim
      let n = pseudo ? size : 1
      return (nonTissueClass, true, (0..<n).map { _ in Int(r.next() % UInt64(M)) })
    }
    let i = Int(r.next() % UInt64(labels.count))
    let group = members[groups[i]]!
    guard pseudo && group.count > 1 else { return (labels[i], false, [i]) }
    // Distinct tiles of the group, the first being i, up to the drawn size.
    var pool = group.filter { $0 != i }
    var rows = [i]
    while rows.count < min(size, group.count) {
      let k = Int(r.next() % UInt64(pool.count))
      rows.append(pool.remove(at: k))
    }
    return (labels[i], false, rows)
  }

  /// The example for one batch slot of one step, tokenized for the embedded decoder.
  public func example(step: Int, slot: Int) -> InstructionExample {
    let c = conversation(step: step, slot: slot)
    let (ids, tg) = ChatFormat.encode(question: c.question, answer: c.answer, tokenizer: tokenizer, length: length)
    return InstructionExample(prefix: c.prefix, ids: ids, targets: tg)
  }

  /// The same example as text, for a language model with its own tokenizer: the slide tokens'
  /// embeddings (``tileTokens`` tiles, then the mean), a question and its answer.
  public func conversation(step: Int, slot: Int) -> SlideConversation {
    var r = rng(step, slot)
    let (cls, nt, rows) = draw(&r)
    let table = nt ? nonTissue : embeddings
    func row(_ j: Int) -> ArraySlice<Float> { table[(j * dim)..<((j + 1) * dim)] }
    var prefix: [Float] = []
    prefix.reserveCapacity((tileTokens + 1) * dim)
    for k in 0..<tileTokens { prefix += row(rows[k % rows.count]) }
    var mean = [Float](repeating: 0, count: dim)
    for j in rows { for (d, v) in row(j).enumerated() { mean[d] += v } }
    prefix += mean.map { $0 / Float(rows.count) }
    let types = Instructions.questionTypes
    let (q, a) = Instructions.pair(classes[cls], type: types[Int(r.next() % UInt64(types.count))], rng: &r)
    return SlideConversation(prefix: prefix, question: q, answer: a)
  }
}
