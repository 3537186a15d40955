import ArgumentParser
import EosinPipelines
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
    commandName: "search", abstract: "Show the passages chat would retrieve for a question, best first, with their scores.")

  @Argument(help: "The question.") var question: String
  @Option(help: "How many passages.") var k = 3

  func run() throws {
    let notes = try chatNotes()
    let hits = notes.search(question, k: k)
    if hits.isEmpty { print("nothing relevant in \(notes.allPassages.count) passages") }
    for (p, score) in hits {
      print(String(format: "%.2f  %@, %@: %@", score, p.collection, p.source, String(p.text.prefix(160))))
    }
  }
}
