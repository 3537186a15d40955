import ArgumentParser
import EosinPipelines
import EosinWeights
import Foundation

#if canImport(FoundationNetworking)
  import FoundationNetworking
#endif

/// Finds OpenSlide's public sample slide CMU-1-Small-Region.svs, in this order:
/// `$EOSIN_SAMPLE_SLIDE`, `../shared/data/slides/` (from the working directory or the project
/// holding the executable), then a sha256-checked copy in the user cache.
enum SampleSlide {
  static let fileName = "CMU-1-Small-Region.svs"
  static let sha256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"
  static let url = "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs"

  static var cachePath: String {
    EosinCache.root + "/samples/" + fileName
  }

  /// Folders that may hold `../shared/data`: the working directory and the project root found
  /// by walking up from the executable.
  static var projectRoots: [String] {
    var roots = [FileManager.default.currentDirectoryPath]
    var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    while url.path != "/" {
      url.deleteLastPathComponent()
      if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
        roots.append(url.path)
        break
      }
    }
    return roots
  }

  /// The first sample found, with where it came from; nil when none.
  static func locate() -> (path: String, source: String)? {
    let fm = FileManager.default
    if let e = ProcessInfo.processInfo.environment["EOSIN_SAMPLE_SLIDE"], !e.isEmpty, fm.fileExists(atPath: e) {
      return (e, "$EOSIN_SAMPLE_SLIDE")
    }
    for r in projectRoots {
      let p = ((r as NSString).appendingPathComponent("../shared/data/slides/" + fileName) as NSString).standardizingPath
      if fm.fileExists(atPath: p) { return (p, "../shared/data/slides") }
    }
    if fm.fileExists(atPath: cachePath), (try? SHA256.hex(fileAt: cachePath)) == sha256 { return (cachePath, "cache") }
    return nil
  }

  /// Downloads the sample into the cache and checks its sha256.
  static func download() throws -> String {
    let dir = (cachePath as NSString).deletingLastPathComponent
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let sem = DispatchSemaphore(value: 0)
    final class Box: @unchecked Sendable { var result: (Data?, Error?) = (nil, nil) }
    let box = Box()
    var req = URLRequest(url: URL(string: url)!)
    req.timeoutInterval = 30
    URLSession.shared.dataTask(with: req) { d, resp, e in
      if let h = resp as? HTTPURLResponse, h.statusCode != 200 {
        box.result = (nil, CLIError("HTTP \(h.statusCode)"))
      } else {
        box.result = (d, e)
      }
      sem.signal()
    }.resume()
    sem.wait()
    let result = box.result
    guard let data = result.0, result.1 == nil else {
      throw CLIError(
        "\(url): cannot download the sample slide (\(result.1?.localizedDescription ?? "no data")); if you are offline, set EOSIN_SAMPLE_SLIDE to a local copy of \(fileName)"
      )
    }
    let got = SHA256.hex([UInt8](data))
    guard got == sha256 else { throw CLIError("\(url): downloaded file has sha256 \(got), expected \(sha256); not saved") }
    try data.write(to: URL(fileURLWithPath: cachePath), options: .atomic)
    return cachePath
  }
}

struct Sample: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the path of the sample slide CMU-1-Small-Region.svs, downloading it once if needed.")

  @Flag(help: "Only look; never download.") var offline = false

  func run() throws {
    if let s = SampleSlide.locate() {
      print(s.path)
      return
    }
    if offline {
      throw CLIError(
        "\(SampleSlide.fileName): sample slide not found locally; run `eosin sample` online or set EOSIN_SAMPLE_SLIDE")
    }
    warn("downloading \(SampleSlide.url) ...")
    print(try SampleSlide.download())
  }
}
