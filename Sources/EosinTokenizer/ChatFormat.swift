import Foundation

/// The chat format shared by training and the chat session:
/// `<|user|> QUESTION<|assistant|> ANSWER<|endoftext|>`.
public enum ChatFormat {
  public static func prompt(_ q: String) -> String { "<|user|> \(q)<|assistant|>" }

  /// Tokens and targets for one turn, padded to `length` with `<|pad|>` (targets -1 except on
  /// the answer and its end token).
  public static func encode(question: String, answer: String, tokenizer: Tokenizer, length: Int) -> (
    ids: [Int32], targets: [Int32]
  ) {
    let p = tokenizer.encode(prompt(question))
    let a = tokenizer.encode(" " + answer) + [tokenizer.eos!]
    var ids = Array((p + a).prefix(length + 1))
    var tg = [Int32](repeating: -1, count: ids.count)
    for i in 0..<(ids.count - 1) where i + 1 >= p.count { tg[i] = ids[i + 1] }
    ids.removeLast()
    tg.removeLast()
    let pad = tokenizer.special["<|pad|>"] ?? tokenizer.eos!
    while ids.count < length {
      ids.append(pad)
      tg.append(-1)
    }
    return (ids, tg)
  }
}
