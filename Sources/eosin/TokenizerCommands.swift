import ArgumentParser
import EosinPipelines
import EosinTensor
import EosinTokenizer
import EosinWeights
import Foundation

/// Eosin's chat-format special tokens, in the order they get ids after the learned merges.
let eosinSpecialTokens = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|image|>", "<|pad|>"]

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train Eosin's models and vocabulary.",
    subcommands: [
      TrainBPE.self, TrainCLIPCommand.self, TrainCLIPAlignCommand.self, TrainDecoderCommand.self, TrainLMProjectorCommand.self,
      TrainLMAdaptersCommand.self,
      TrainFinalize.self,
    ])
}

struct TrainBPE: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "bpe", abstract: "Train a byte-level BPE vocabulary (GPT-2 format) on text corpora.")

  @Option(parsing: .upToNextOption, help: "Corpus files or folders (.json, .csv, .txt); folders are read recursively.")
  var corpus: [String]
  @Option(help: "Vocabulary size, including 256 byte symbols and the special tokens.") var vocabSize = 8192
  @Option(help: "Output folder for vocab.json, merges.txt and special_tokens.json.") var out: String
  @Option(help: "Pairs seen fewer times are never merged.") var minFrequency = 2

  func run() throws {
    var files: [String] = []
    for c in corpus {
      var isDir: ObjCBool = false
      guard FileManager.default.fileExists(atPath: c, isDirectory: &isDir) else {
        throw CLIError("\(c): no such file or directory")
      }
      if isDir.boolValue {
        let e = FileManager.default.enumerator(atPath: c)
        while let f = e?.nextObject() as? String {
          if ["json", "csv", "txt"].contains((f as NSString).pathExtension.lowercased()) {
            files.append((c as NSString).appendingPathComponent(f))
          }
        }
      } else {
        files.append(c)
      }
    }
    files.sort()
    var texts: [String] = []
    var bytes = 0
    for f in files {
      let t = try TextCorpus.read(f)
      bytes += t.reduce(0) { $0 + $1.utf8.count }
      warn("corpus  \(f): \(t.count) texts")
      texts += t
    }
    guard !texts.isEmpty else { throw CLIError("no text found in \(corpus.joined(separator: ", "))") }
    let t0 = Probes.now()
    let trainer = BPETrainer(vocabSize: vocabSize, specialTokens: eosinSpecialTokens, minFrequency: minFrequency)
    let r = try trainer.train(texts) { done, target in if isTerminal(2) { warn("merges  \(done)/\(target)") } }
    try BPETrainer.write(r, specialTokens: eosinSpecialTokens, to: out)
    print(
      "trained \(r.vocab.count) tokens (\(r.merges.count) merges) on \(texts.count) texts, \(bytes / 1000) kB, in \(fmt(Probes.now() - t0, 1)) s -> \(out)"
    )
  }
}

struct Tokenize: ParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Print the tokens and ids of a text.")

  @Option(
    help:
      "Vocabulary: a folder (vocab.json + merges.txt, or tokenizer.json), a tokenizer.json, CLIP's merges .txt[.gz], or a GGUF model file (its own tokenizer, as llama.cpp runs it)."
  )
  var vocab: String = "Vocab"
  @Argument(help: "Text to tokenize.") var text: String
  @Flag(help: "Add the start and end tokens (CLIP style); for GGUF, the model's BOS rule and special-token parsing.")
  var special = false

  func run() throws {
    let tok: Tokenizer
    var ids: [Int32]
    if vocab.lowercased().hasSuffix(".gguf") {
      tok = try LanguageModel.tokenizer(GGUFFile(path: vocab))
      ids = tok.encodeLlama(text, addSpecial: special, parseSpecial: special)
    } else {
      tok = try Tokenizer.load(vocab)
      ids = tok.encode(text)
      if special { ids = (tok.bos.map { [$0] } ?? []) + ids + (tok.eos.map { [$0] } ?? []) }
    }
    let strs = tok.tokenStrings(ids)
    for (s, i) in zip(strs, ids) { print("\(String(i).padding(toLength: 7, withPad: " ", startingAt: 0)) \(s)") }
    let kind = tok.pre == .gpt2 ? tok.style.rawValue : "\(tok.style.rawValue), pre-tokenizer \(tok.pre.rawValue)"
    print("\(ids.count) tokens (\(kind), vocab \(tok.vocabSize))")
  }
}

struct BenchTokenizer: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "tokenizer", abstract: "Encode throughput in MB/s on a text corpus, one core.")

  @Option(help: "Vocabulary, as for `eosin tokenize`.") var vocab = "Vocab"
  @Option(parsing: .upToNextOption, help: "Corpus files.") var corpus: [String]
  @Option(help: "Timed passes over the corpus (each with a fresh tokenizer, so the word cache starts empty).") var repeats = 3

  func run() throws {
    var texts: [String] = []
    for f in corpus { texts += try TextCorpus.read(f) }
    let bytes = texts.reduce(0) { $0 + $1.utf8.count }
    var rates: [Double] = []
    var tokens = 0
    for _ in 0..<repeats {
      let tok = try Tokenizer.load(vocab)
      let t0 = Probes.now()
      tokens = 0
      for t in texts { tokens += tok.encode(t).count }
      rates.append(Double(bytes) / 1e6 / (Probes.now() - t0))
    }
    print(
      "corpus     \(texts.count) texts, \(fmt(Double(bytes) / 1e6, 2)) MB -> \(tokens) tokens (\(fmt(Double(bytes) / Double(tokens), 2)) bytes/token)"
    )
    print("encode     \(fmt(medianOf(rates), 2)) MB/s (median of \(repeats), one core, cold cache each pass; target >= 5)")
  }
}
