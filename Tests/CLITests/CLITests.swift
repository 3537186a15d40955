import Foundation
import TestSupport
import XCTest

/// Runs the built `eosin` binary and checks its output, errors and exit codes.
final class CLITests: XCTestCase {
  static var binary: String {
    // The test bundle is in, or is, the build products folder that holds the executable.
    let b = Bundle(for: CLITests.self).bundleURL
    for dir in [b, b.deletingLastPathComponent()] {
      let p = dir.appendingPathComponent("eosin").path
      if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return b.appendingPathComponent("eosin").path
  }

  struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
  }

  @discardableResult
  static func run(_ args: [String], as user: String? = nil, stdin: String? = nil, env: [String: String] = [:]) throws -> Run {
    let p = Process()
    if let u = user {
      p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
      p.arguments = ["--reuid=\(u)", "--regid=\(u)", "--clear-groups", binary] + args
    } else {
      p.executableURL = URL(fileURLWithPath: binary)
      p.arguments = args
    }
    var e = ProcessInfo.processInfo.environment
    // Chat and report answer with the embedded decoder unless a test names a language model
    // (--lm, or EOSIN_LM in `env`): the tiny test bundles are what these tests check.
    e["EOSIN_LM"] = "none"
    for (k, v) in env { e[k] = v }
    p.environment = e
    let o = Pipe(), er = Pipe(), i = Pipe()
    p.standardOutput = o
    p.standardError = er
    p.standardInput = i
    try p.run()
    if let s = stdin { i.fileHandleForWriting.write(Data(s.utf8)) }
    try i.fileHandleForWriting.close()
    let od = o.fileHandleForReading.readDataToEndOfFile()
    let ed = er.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(
      status: p.terminationStatus, stdout: String(decoding: od, as: UTF8.self), stderr: String(decoding: ed, as: UTF8.self))
  }

  /// Runs a shell command line (for `ulimit`), with the same environment as ``run(_:as:stdin:env:)``.
  static func runShell(_ line: String) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/sh")
    p.arguments = ["-c", line]
    var e = ProcessInfo.processInfo.environment
    e["EOSIN_LM"] = "none"
    p.environment = e
    let o = Pipe(), er = Pipe()
    p.standardOutput = o
    p.standardError = er
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let od = o.fileHandleForReading.readDataToEndOfFile()
    let ed = er.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(
      status: p.terminationStatus, stdout: String(decoding: od, as: UTF8.self), stderr: String(decoding: ed, as: UTF8.self))
  }

  static var dir = TestSupport.tempDir("eosin-cli")
  static var slide: String = {
    try! TestSupport.writeSyntheticSlide(at: dir + "/syn.tiff", width: 1536, height: 1024, levels: 3, mpp: 0.5)
  }()

  /// Guards: `eosin --help` lists the subcommands.
  func testHelp() throws {
    let r = try Self.run(["--help"])
    XCTAssertEqual(r.status, 0)
    for c in ["info", "thumbnail", "tiles", "sample", "bench"] { XCTAssertTrue(r.stdout.contains(c), c) }
  }

  /// Guards: `eosin info` reports vendor, size, levels, mpp, tissue and tile count.
  func testInfo() throws {
    let r = try Self.run(["info", Self.slide])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("generic-tiff"))
    XCTAssertTrue(r.stdout.contains("1536 x 1024 px"))
    XCTAssertTrue(r.stdout.contains("0.5000 x 0.5000 µm/px"))
    XCTAssertTrue(r.stdout.contains("brightfield"))
    XCTAssertTrue(r.stdout.contains("tiles"))
    let j = try Self.run(["info", Self.slide, "--json"])
    let obj = try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as! [String: Any]
    XCTAssertEqual(obj["width"] as? Int, 1536)
    XCTAssertEqual((obj["levels"] as? [Any])?.count, 3)
  }

  /// Guards: thumbnail writes a PNG of the requested size, with and without the overlay.
  func testThumbnail() throws {
    let out = Self.dir + "/thumb.png"
    let r = try Self.run(["thumbnail", Self.slide, "--out", out, "--size", "300", "--overlay-tissue"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("300x200"))
    XCTAssertTrue(FileManager.default.fileExists(atPath: out))
  }

  /// Guards: tiles writes one image per kept tile plus tiles.csv with level-0 coordinates.
  func testTiles() throws {
    let out = Self.dir + "/tiles"
    let r = try Self.run(["tiles", Self.slide, "--mpp", "1.0", "--size", "128", "--out", out])
    XCTAssertEqual(r.status, 0, r.stderr)
    let csv = try String(contentsOfFile: out + "/tiles.csv", encoding: .utf8).split(separator: "\n")
    XCTAssertEqual(csv[0], "index,col,row,x,y,size0,tissue,mpp,file")
    XCTAssertGreaterThan(csv.count, 2)
    let first = csv[1].split(separator: ",")
    XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + first[8]))
    XCTAssertEqual(Int(first[3])! % 256, 0)
  }

  /// Guards bad input: each case exits 2 with one line naming the file and the problem.
  func testBadInputsExitTwoWithOneLine() throws {
    let d = TestSupport.tempDir()
    FileManager.default.createFile(atPath: d + "/empty.svs", contents: Data())
    FileManager.default.createFile(
      atPath: d + "/random.svs", contents: Data((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) }))
    let png = d + "/tile.png"
    let t = try Self.run(["thumbnail", Self.slide, "--out", png, "--size", "32"])
    XCTAssertEqual(t.status, 0)
    let full = try Data(contentsOf: URL(fileURLWithPath: Self.slide))
    FileManager.default.createFile(atPath: d + "/trunc.tiff", contents: full.prefix(min(65536, full.count / 2)))
    let cases: [(String, String)] = [
      (d + "/missing.svs", "no such file"), (d, "is a directory"), (d + "/empty.svs", "file is empty"),
      (d + "/random.svs", "not a slide format"), (png, "pass it as an image input"), (d + "/trunc.tiff", "truncated, corrupt"),
    ]
    for (path, needle) in cases {
      let r = try Self.run(["info", path])
      XCTAssertEqual(r.status, 2, path)
      let lines = r.stderr.split(separator: "\n")
      XCTAssertEqual(lines.count, 1, r.stderr)
      XCTAssertTrue(r.stderr.hasPrefix("eosin: error: \(path)"), r.stderr)
      XCTAssertTrue(r.stderr.contains(needle), r.stderr)
    }
  }

  /// Guards bad input: a slide without read permission. Root reads anything, so the binary is
  /// run as user `nobody` through setpriv when the tests run as root.
  func testUnreadableFile() throws {
    let d = TestSupport.tempDir()
    try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: d)
    let p = d + "/secret.tiff"
    try FileManager.default.copyItem(atPath: Self.slide, toPath: p)
    try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: p)
    let asUser: String? = getuid() == 0 ? "65534" : nil
    if asUser != nil && !FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") {
      throw XCTSkip("running as root without setpriv")
    }
    // nobody must be able to reach the binary and the folder.
    let r = try Self.run(["info", p], as: asUser)
    if r.stderr.contains("Permission denied") && !r.stderr.contains(p) {
      throw XCTSkip("binary not reachable as nobody: \(r.stderr)")
    }
    XCTAssertEqual(r.status, 2, r.stderr)
    XCTAssertEqual(r.stderr, "eosin: error: \(p): permission denied; check the file's read permission\n")
  }

  /// Guards: a slide without mpp is refused by tiles with the actionable message, and accepted
  /// with --slide-mpp.
  func testTilesWithoutMPP() throws {
    let p = Self.dir + "/nompp.tiff"
    try TestSupport.writeSyntheticSlide(at: p, width: 512, height: 512, levels: 1, mpp: nil)
    let r = try Self.run(["tiles", p, "--out", Self.dir + "/nompp-tiles"])
    XCTAssertEqual(r.status, 2)
    XCTAssertEqual(r.stderr, "eosin: error: \(p): slide has no microns-per-pixel; pass --slide-mpp VALUE if you know it\n")
    let ok = try Self.run(["tiles", p, "--out", Self.dir + "/nompp-tiles", "--slide-mpp", "0.5", "--size", "64"])
    XCTAssertEqual(ok.status, 0, ok.stderr)
  }

  /// Guards: `eosin sample --offline` finds the slide through $EOSIN_SAMPLE_SLIDE, and fails
  /// with a clear message when nothing is found.
  func testSampleLookup() throws {
    let r = try Self.run(["sample", "--offline"], env: ["EOSIN_SAMPLE_SLIDE": Self.slide])
    XCTAssertEqual(r.stdout, Self.slide + "\n")
  }
}
