import EosinModels
import EosinPipelines
import EosinTokenizer
import EosinWeights
import Foundation
import TestSupport
import XCTest

/// GGUF language models end to end: llama.cpp's tokenization, chat templates, and greedy
/// generation against transformers (Scripts/reference/make_tokenizer_golden.py and
/// make_lm_references.py wrote the fixtures).
final class LanguageModelTests: XCTestCase {
  static let fixtures = TestSupport.projectRoot + "/Tests/EosinModelsTests/Fixtures/gguf"

  static func json(_ name: String) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: fixtures + "/" + name))) as! [String: Any]
  }

  func checkGolden(_ key: String, _ path: String) throws {
    let g = try Self.json("tokenizer-golden.json")[key] as! [[String: Any]]
    XCTAssertGreaterThanOrEqual(g.count, 200)
    let tok = try LanguageModel.tokenizer(GGUFFile(path: path))
    var bad = 0
    for e in g {
      let text = String(decoding: (e["utf8"] as! [Int]).map { UInt8($0) }, as: UTF8.self)
      let plain = (e["plain"] as! [Int]).map { Int32($0) }
      let special = (e["special"] as! [Int]).map { Int32($0) }
      let a = tok.encodeLlama(text, addSpecial: true, parseSpecial: false)
      let b = tok.encodeLlama(text, addSpecial: true, parseSpecial: true)
      if a != plain || b != special {
        bad += 1
        if bad <= 5 { XCTFail("\(key) \(text.debugDescription): plain \(a) vs \(plain), special \(b) vs \(special)") }
      }
    }
    XCTAssertEqual(bad, 0, "\(key): \(bad) of \(g.count) strings differ from llama.cpp")
  }

  /// Guards: the `llama-bpe` and `qwen2` pre-tokenizers split exactly as llama.cpp's.
  func testTokenizerMatchesLlamaCppOnFixtures() throws {
    try checkGolden("llama-bpe", Self.fixtures + "/tiny-llama-F32.gguf")
    try checkGolden("qwen2", Self.fixtures + "/tiny-qwen2-F32.gguf")
  }

  /// Guards: SmolLM2's tokenizer (`smollm`: digits split one by one) is llama.cpp's, on 294
  /// strings with and without special-token parsing.
  func testTokenizerMatchesLlamaCppOnSmolLM2() throws {
    guard let p = TestSupport.smolLM2 else { throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not in the cache; run `make lm`") }
    try checkGolden("smollm2", p)
  }

  /// Guards: ChatML and Llama 3 rendering and the default system message taken from the
  /// template text, written with an escaped or a literal newline.
  func testChatTemplates() {
    let smol =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    XCTAssertEqual(ChatTemplate.detect(smol), .chatml)
    XCTAssertEqual(
      ChatTemplate.defaultSystem(smol, .chatml), "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    let escaped = smol.replacingOccurrences(of: "\n", with: "\\n")
    XCTAssertEqual(
      ChatTemplate.defaultSystem(escaped, .chatml), "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    XCTAssertNil(ChatTemplate.defaultSystem("{{'<|im_start|>' + m['role'] }}", .chatml))
    XCTAssertEqual(
      ChatTemplate.chatml.render([("system", "S"), ("user", "Q")]),
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n")
    XCTAssertEqual(ChatTemplate.detect("{{ '<|start_header_id|>' + role + '<|end_header_id|>\n\n' }}"), .llama3)
    XCTAssertEqual(
      ChatTemplate.llama3.render([("user", "Q")]),
      "<|start_header_id|>user<|end_header_id|>\n\nQ<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    XCTAssertNil(ChatTemplate.detect("{{ messages }}"))
  }

  /// Guards: streamed pieces add up to the whole text, and a generation stops at the length.
  func testTinyModelStreams() throws {
    let lm = try LanguageModel(path: Self.fixtures + "/tiny-llama-Q4_0.gguf")
    XCTAssertEqual(lm.template, .chatml)
    let ids = lm.promptIDs(user: "hello there")
    XCTAssertEqual(ids.first, lm.tokenizer.special["<|im_start|>"])
    var pieces = ""
    let g = try lm.generate(prompt: ids, state: lm.model.makeState(capacity: 64), options: SamplingOptions(maxTokens: 12)) {
      pieces += $0
      return true
    }
    XCTAssertEqual(pieces, g.text)
    XCTAssertLessThanOrEqual(g.tokens.count, 12)
    XCTAssertEqual(g.probabilities.count, g.tokens.count)
    // Sampling with a seed is reproducible.
    let o = SamplingOptions(temperature: 0.8, topP: 0.9, seed: 3, maxTokens: 8)
    let a = try lm.generate(prompt: ids, state: lm.model.makeState(capacity: 64), options: o)
    let b = try lm.generate(prompt: ids, state: lm.model.makeState(capacity: 64), options: o)
    XCTAssertEqual(a.tokens, b.tokens)
  }

  /// Guards: greedy continuations on the real SmolLM2 file, exact path (fp32 activations, the
  /// default): the 64 tokens transformers generates (or up to its end of turn), on five prompts.
  func testSmolLM2GreedyMatchesTransformers() throws {
    guard let p = TestSupport.smolLM2 else { throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not in the cache; run `make lm`") }
    let lm = try LanguageModel(path: p)
    let ref = try Self.json("smollm2-reference.json")["prompts"] as! [[String: Any]]
    XCTAssertEqual(ref.count, 5)
    for e in ref {
      let text = e["text"] as! String
      let ids = (e["ids"] as! [Int]).map { Int32($0) }
      XCTAssertEqual(lm.promptIDs(user: text), ids, "prompt ids for \(text)")
      let want = (e["transformers"] as! [Int]).map { Int32($0) }
      let exact = try lm.generate(
        prompt: ids, state: lm.model.makeState(capacity: 256, precision: .exact), options: SamplingOptions(maxTokens: 64))
      XCTAssertEqual(exact.tokens, want, "exact path, \(text)")
    }
  }

  /// Guards the hidden states hybrid retrieval embeds with (``NoteEmbeddings``): the PromptEOL
  /// prompt's ids and the last token's final hidden state against transformers'
  /// (Scripts/reference/make_hidden_reference.py) on the real SmolLM2 file.
  func testSmolLM2HiddenStatesMatchTransformers() throws {
    guard let p = TestSupport.smolLM2 else { throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not in the cache; run `make lm`") }
    let lm = try LanguageModel(path: p)
    let ref = try Self.json("smollm2-hidden.json")["texts"] as! [[String: Any]]
    XCTAssertEqual(ref.count, 3)
    for e in ref {
      let text = e["text"] as! String
      let ids = (e["ids"] as! [Int]).map { Int32($0) }
      XCTAssertEqual(
        lm.tokenizer.encodeLlama("This text: \"\(text)\" means in one word: \"", addSpecial: true, parseSpecial: false), ids, text
      )
      let h = try lm.model.lastHiddenState(ids)
      let want = (e["hidden"] as! [Double]).map { Float($0) }
      XCTAssertEqual(h.count, want.count)
      var dot: Float = 0, nh: Float = 0, nw: Float = 0, worst: Float = 0
      for (a, b) in zip(h, want) {
        dot += a * b
        nh += a * a
        nw += b * b
        worst = max(worst, abs(a - b))
      }
      XCTAssertGreaterThan(dot / (nh * nw).squareRoot(), 0.9999, text)
      XCTAssertLessThan(worst, 0.02, "\(text): largest difference \(worst)")
    }
  }

  /// Guards: a note embedding is the model's own final hidden state, the passages' embeddings
  /// are cached on disk and read back identical, a passage's own text is its nearest, and the
  /// fusion only reorders what BM25 found (an unrelated question still finds nothing).
  func testNoteEmbeddingsOnTinyModel() throws {
    let lm = try LanguageModel(path: Self.fixtures + "/tiny-llama-Q4_0.gguf")
    let ids = lm.tokenizer.encodeLlama("hello there", addSpecial: true, parseSpecial: false)
    let h = try lm.model.lastHiddenState(ids)
    XCTAssertEqual(h.count, lm.model.config.channels)
    // Each call runs in a fresh state: the same text, the same embedding.
    XCTAssertEqual(h, try lm.model.lastHiddenState(ids))
    XCTAssertThrowsError(try lm.model.lastHiddenState([]))
    let notes = KnowledgeNotes(passages: [
      NotePassage(source: "a#1", title: "granuloma", text: "A granuloma is a collection of macrophages."),
      NotePassage(source: "a#2", title: "fibrosis", text: "Fibrosis is scar tissue made of collagen."),
      NotePassage(source: "a#3", title: "necrosis", text: "Necrosis is cell death with loss of nuclei."),
    ])
    let dir = TestSupport.tempDir("eosin-note-embeddings")
    let e = try NoteEmbeddings(notes: notes, lm: lm, cacheDirectory: dir)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir)
    XCTAssertEqual(files.count, 1)
    XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: dir + "/" + files[0])[.size] as? Int, 3 * e.dim * 4)
    let again = try NoteEmbeddings(notes: notes, lm: lm, cacheDirectory: dir)
    for (i, p) in notes.passages.enumerated() {
      let sim = try e.similarities(p.title + ": " + p.text)
      XCTAssertEqual(sim.indices.max { sim[$0] < sim[$1] }, i)
      XCTAssertEqual(sim[i], 1, accuracy: 1e-4)
      XCTAssertEqual(sim, try again.similarities(p.title + ": " + p.text))
    }
    XCTAssertTrue(notes.search("What is the capital of France?", dense: e).isEmpty)
    let hits = notes.search("collagen scar macrophages", k: 3, minimumScore: 0.1, dense: e)
    XCTAssertEqual(
      Set(hits.map(\.0.source)), Set(notes.search("collagen scar macrophages", k: 3, minimumScore: 0.1).map(\.0.source)))
  }

  /// Guards the stated tolerance of the q8 path (int8 activations, as llama.cpp): the prompt's
  /// top-64 last logits within 1.25 of transformers (measured: 0.90; the logits span about 30)', and the first 32 greedy tokens identical on
  /// at least 3 of the 5 prompts. Int8 activations flip near-ties: on "What is the capital of
  /// France?" both this path and llama.cpp itself pick a different first token than transformers.
  func testSmolLM2Q8PathTolerance() throws {
    guard let p = TestSupport.smolLM2 else { throw XCTSkip("SmolLM2-135M-Instruct.Q4_1.gguf not in the cache; run `make lm`") }
    let lm = try LanguageModel(path: p)
    let ref = try Self.json("smollm2-reference.json")["prompts"] as! [[String: Any]]
    var agreeing = 0
    var worst: Float = 0
    for e in ref {
      let ids = (e["ids"] as! [Int]).map { Int32($0) }
      let s = lm.model.makeState(capacity: 256, precision: .q8)
      // Prompt through the batched path except its last token, which takes the q8 decode path.
      _ = try lm.model.forward(Array(ids.dropLast()), state: s)
      let logits = try lm.model.forward([ids.last!], state: s)
      for (i, v) in zip(e["last_top_ids"] as! [Int], e["last_top_logits"] as! [Double]) {
        worst = max(worst, abs(logits[i] - Float(v)))
      }
      let want = (e["transformers"] as! [Int]).map { Int32($0) }
      let q8 = try lm.generate(
        prompt: ids, state: lm.model.makeState(capacity: 256, precision: .q8), options: SamplingOptions(maxTokens: 32))
      let n = min(32, want.count)
      if Array(q8.tokens.prefix(n)) == Array(want.prefix(n)) { agreeing += 1 }
    }
    XCTAssertLessThanOrEqual(worst, 1.25, "q8 top-64 logits differ from transformers by \(worst)")
    XCTAssertGreaterThanOrEqual(agreeing, 3, "q8 path: first 32 tokens identical on \(agreeing) of 5 prompts")
    print("q8 path: top-64 logit deviation \(worst); first 32 tokens identical on \(agreeing) of 5 prompts")
  }
}
