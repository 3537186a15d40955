import ArgumentParser
import EosinSlide
import Foundation

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Benchmarks. Each prints medians and a ratio against a reference measured in the same run.",
    subcommands: [BenchSlide.self])
}

struct BenchSlide: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "slide", abstract: "Tiler tiles/s against a raw OpenSlide read_region loop over the same regions.")

  @Argument(help: "A whole-slide image.") var slide: String
  @Option(help: "Target microns per pixel.") var mpp: Double = 0.5
  @Option(help: "Tile side in pixels.") var size: Int = 224
  @Option(help: "Timed rounds of each loop.") var repeats: Int = 5
  @Option(help: "Relative mpp tolerance for 1:1 reads (0 forces resampling).") var tolerance: Double = 0.01
  @Option(help: "The slide's level-0 mpp when the file lacks it.") var slideMpp: Double?

  func run() throws {
    let s = try Slide(path: slide)
    let tissue = try TissueDetector().detect(s)
    let tiler = try Tiler(
      slide: s, mpp: mpp, tileSize: size, overrideMPP: slideMpp, tissue: tissue, tolerance: tolerance, mppOption: "--slide-mpp")
    let r = try SlideBenchmark.run(tiler, repeats: max(1, repeats))
    let t = median(r.tilerRates), raw = median(r.rawRates)
    print("slide      \((slide as NSString).lastPathComponent)")
    print(
      "tiles      \(r.tiles) of \(size) px at \(fmt(tiler.grid.mpp, 4)) µm/px from level \(tiler.grid.level)\(r.resampled ? " (resampled)" : " (1:1)")"
    )
    print("raw loop   \(fmt(raw, 1)) tiles/s (median of \(r.rawRates.count); openslide_read_region only)")
    print("tiler      \(fmt(t, 1)) tiles/s (median of \(r.tilerRates.count); read + RGB\(r.resampled ? " + resample" : ""))")
    print("ratio      \(fmt(t / raw, 3))x raw (target >= 0.9)")
  }
}
