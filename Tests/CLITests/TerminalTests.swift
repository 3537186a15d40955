import Foundation
import TestSupport
import XCTest

/// The chat REPL as a person uses it, through tmux: a question, Ctrl-C at the prompt, up-arrow
/// history recall, tab completion, Ctrl-D. Skips when tmux is not installed.
final class TerminalTests: XCTestCase {
  /// Runs Scripts/tmux-chat-test.sh (a question, Ctrl-C at the prompt, up-arrow history, tab
  /// completion, Ctrl-D) against a tiny bundle and a synthetic slide. Output goes to a file, so
  /// no pipe is held open by the tmux server.
  func testReadlineSession() throws {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux") else { throw XCTSkip("tmux is not installed") }
    let bundle = try TestSupport.writeTinyBundle(at: TestSupport.tempDir("eosin-tmux-bundle"))
    let dir = TestSupport.tempDir("eosin-tmux")
    let slide = try TestSupport.writeSyntheticSlide(at: dir + "/case.tiff", width: 1536, height: 1024, levels: 2, mpp: 0.5)
    let log = dir + "/tmux.log"
    FileManager.default.createFile(atPath: log, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
    p.arguments = ["300", TestSupport.projectRoot + "/Scripts/tmux-chat-test.sh", CLITests.binary, bundle, slide, dir]
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = FileHandle(forWritingAtPath: log)
    p.standardError = FileHandle(forWritingAtPath: log)
    try p.run()
    p.waitUntilExit()
    let out = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    XCTAssertEqual(p.terminationStatus, 0, out)
    XCTAssertTrue(out.contains("tmux chat test: OK"), out)
  }
}
