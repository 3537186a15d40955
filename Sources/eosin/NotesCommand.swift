import ArgumentParser
import EosinPipelines
import EosinTraining
import Foundation

/// `eosin notes`: the reference text chat retrieves from, besides Eosin's own notes.
struct Notes: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Import reference text for chat's retrieval (searched after Eosin's own notes) and search the notes.",
    subcommands: [NotesImport.self, NotesSearch.self])
}

struct NotesImport: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "import",
    abstract:
      "Cut lecture notes (JSON lines of file, title, text, such as ../shared/data/text/atlas-lecture-notes.jsonl) into passages for chat's retrieval. They stay on this machine, in the cache folder; never in the repository."
  )

  @Argument(help: "The lecture notes, JSON lines with file, title and text.") var file: String
  @Option(help: "How answers that use them name the collection, with its terms.")
  var collection = "atlas lecture notes (CC BY 4.0)"
  @Option(help: "Folder to write the passages to (default: the cache's notes folder).") var out: String?

  func run() throws {
    let notes = try KnowledgeNotes.lectureNotes(jsonl: file, collection: collection)
    guard let count = (notes["notes"] as? [Any])?.count, count > 0 else {
      throw CLIError("\(file): no passages to import (no lecture with English text)")
    }
    let dir = out ?? KnowledgeNotes.importedDirectory
    let name = ((file as NSString).lastPathComponent as NSString).deletingPathExtension + ".json"
    let data = try JSONSerialization.data(withJSONObject: notes, options: [.prettyPrinted, .sortedKeys])
    do {
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      try data.write(to: URL(fileURLWithPath: dir + "/" + name), options: .atomic)
    } catch {
      throw CLIError("\(dir)/\(name): cannot write (\(error.localizedDescription))")
    }
    print("imported: \(count) passages from \(file) into \(dir)/\(name)")
  }
}

struct NotesSearch: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "search",
    abstract:
      "Show the passages chat would retrieve for a question, best first, with their scores; or, with --questions, score retrieval on question sets with key facts."
  )

  @Argument(help: "The question.") var question: String?
  @Option(help: "How many passages.") var k = 3
  @Option(help: "How to rank Eosin's notes: bm25 (chat's default) or hybrid (fused with the language model's hidden states).")
  var retrieval: Retrieval = .bm25
  @Option(
    help:
      "Language model whose hidden states the hybrid ranking uses (GGUF; default: $EOSIN_LM or the fetched SmolLM2)."
  )
  var lm: String?
  @Option(
    parsing: .upToNextOption,
    help:
      "Question sets with key facts (as Prompts/eval/*.json): print, for BM25 alone and fused with the language model, how many first passages hold every key fact and are the named note."
  )
  var questions: [String] = []

  func validate() throws {
    if question == nil && questions.isEmpty { throw ValidationError("pass a question, or --questions FILE...") }
  }

  func run() throws {
    // Every question file is read first: a bad one stops the run before anything is printed.
    let sets = try questions.map { (($0 as NSString).lastPathComponent, try ChatComparison.questions($0).questions) }
    let notes = try chatNotes()
    var dense: NoteEmbeddings?
    if retrieval == .hybrid || !questions.isEmpty {
      guard let path = LanguageModel.Default.resolve(lm) else {
        throw CLIError("the hybrid ranking needs a language model: pass --lm FILE.gguf, or fetch SmolLM2 (`make lm`)")
      }
      dense = try NoteEmbeddings(notes: notes, lm: try LanguageModel(path: path))
    }
    if let q = question {
      let hits = notes.search(q, k: k, dense: retrieval == .hybrid ? dense : nil)
      if hits.isEmpty { print("nothing relevant in \(notes.allPassages.count) passages") }
      if let w = notes.mostSpecificWord(of: q) { print("most specific word of the question: \"\(w)\"") }
      for (p, score) in hits {
        let m = notes.match(of: q, by: p)
        print(
          String(
            format: "%.2f  match %.2f  %@, %@: %@", score, m.share, p.collection, p.source, String(p.text.prefix(160))))
      }
    }
    guard !questions.isEmpty else { return }
    let name = "BM25 + \((dense!.modelPath as NSString).lastPathComponent) hidden states"
    print("| questions | n | first passage holds the key facts: BM25 | \(name) | first passage is the named note: BM25 | fused |")
    print("|---|---|---|---|---|---|")
    for (file, qs) in sets {
      let a = notes.retrievalScore(qs, dense: nil), b = notes.retrievalScore(qs, dense: dense)
      let named = a.named > 0 ? ["\(a.noteFirst)/\(a.named)", "\(b.noteFirst)/\(b.named)"] : ["-", "-"]
      print(
        "| \(file) | \(a.questions) | \(a.factsFirst)/\(a.questions) | \(b.factsFirst)/\(b.questions) | \(named[0]) | \(named[1]) |"
      )
    }
  }
}
