import ArgumentParser
import EosinPipelines
import EosinSlide
import EosinTensor
import Foundation

struct Embed: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Tile features of slides, images and folders, written as TRIDENT and CLAM read them (HDF5 or safetensors).",
    discussion:
      "Each slide's tissue tiles are encoded at the encoder's native mpp and tile size. `features` holds one row per tile, `coords` its level-0 top-left corner (for plain images: the image's index, then 0). With --out-dir, one file per slide (NAME.h5; a slide whose file exists is skipped, so a rerun resumes), and images together in images.h5. Every input is tried; failures are one line each and the exit status is then 2."
  )

  @Option(
    help:
      "The encoder: 'default' (Eosin's CLIP), an Eosin weights folder, or a published checkpoint folder as downloaded (timm: UNI, UNI2-h, Virchow2, Prov-GigaPath, H-optimus; transformers ViT, Dinov2, CLIP: Phikon, Phikon-v2, PLIP; open_clip ViT and CoCa: QuiltNet)."
  ) var encoder = "default"
  @Option(help: "Tile side in pixels at --target-mpp (default: the encoder's input size; Eosin weights: their native tile).")
  var patchSize: Int?
  @Option(help: "Microns per pixel the tiles are read at (default 0.5, i.e. 20x; Eosin weights: their native mpp).")
  var targetMpp: Double?
  @Option(help: "fp32 (default) or bf16 (AVX512-BF16 GEMMs, weights converted once; about 2x faster here).")
  var precision = "fp32"
  @Argument(help: "Slides, images and folders.") var inputs: [String]
  @Option(help: "Output file, for one slide or a set of images.") var out: String?
  @Option(help: "Output folder: one file per slide, images in images.h5.") var outDir: String?
  @Option(help: "h5 (default) or safetensors.") var format = "h5"
  @Option(help: "The slides' level-0 mpp when the files lack it.") var mpp: Double?
  @Option(
    help:
      "This process's shard, i/n with 0 <= i < n (default: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX/EOSIN_SHARD_COUNT, when set)."
  )
  var shard: String?

  func validate() throws {
    if (out == nil) == (outDir == nil) { throw ValidationError("pass --out FILE or --out-dir DIR") }
    if !["h5", "safetensors"].contains(format) { throw ValidationError("--format must be h5 or safetensors") }
    if let m = mpp, !(m > 0 && m < 1000) { throw ValidationError("--mpp must be a positive number of microns per pixel") }
    if let m = targetMpp, !(m > 0 && m < 1000) {
      throw ValidationError("--target-mpp must be a positive number of microns per pixel")
    }
    if let p = patchSize, !(p >= 16 && p <= 4096) { throw ValidationError("--patch-size must be between 16 and 4096 pixels") }
    if Precision(rawValue: precision) == nil { throw ValidationError("--precision must be fp32 or bf16") }
  }

  func run() throws {
    let enc = try FeatureEncoder.open(
      encoder == "default" ? ModelBundle.defaultPath() : encoder, tileSize: patchSize, mpp: targetMpp,
      precision: Precision(rawValue: precision) ?? .fp32)
    var items: [(String, InputCollector.Kind)] = []
    var missing: [(String, Error)] = []
    for i in inputs {
      do { items += try InputCollector.collect([i]) } catch { missing.append((i, error)) }
    }
    let slides = items.filter { $0.1 == .slide }.map(\.0)
    let images = items.filter { $0.1 == .image }.map(\.0)
    if let o = out, slides.count + (images.isEmpty ? 0 : 1) > 1 {
      throw ValidationError("\(o): --out takes one slide or one set of images; use --out-dir for several")
    }
    let spec = try ShardSpec.resolve(shard)
    let ext = format == "h5" ? "h5" : "safetensors"
    let names = ReportNaming.names(slides)
    let mine = slides.indices.filter { spec.takes($0) }
    let log = BatchLog(
      total: mine.count + (images.isEmpty || spec.index != 0 ? 0 : 1) + missing.count, verb: "embedded")
    for (p, e) in missing { log.failure(p, e) }
    for k in mine {
      let path = slides[k]
      let dest = out ?? "\(outDir!)/\(names[k]).\(ext)"
      if outDir != nil && FileManager.default.fileExists(atPath: dest) {
        log.upToDate(path)
        continue
      }
      do {
        let t0 = Probes.now()
        let bar = Progress(label: (path as NSString).lastPathComponent)
        let r = try FeatureExport.stream(
          slide: try Slide(path: path), encoder: enc, overrideMPP: mpp, to: dest, safetensors: format == "safetensors",
          progress: bar.update)
        let s = Probes.now() - t0
        log.succeeded(
          path,
          String(
            format: "%d tiles x %d in %.2f s (%.1f tiles/s; encoding alone %.1f tiles/s) -> %@", r.tiles, r.dim, s,
            Double(r.tiles) / s, Double(r.tiles) / max(r.encodeSeconds, 1e-9), dest),
          alone: true)
      } catch {
        log.failure(path, error)
      }
    }
    if !images.isEmpty && spec.index == 0 {
      let dest = out ?? "\(outDir!)/images.\(ext)"
      do {
        let a = try AnalyzedSlide.analyze(images, encoder: enc, cacheDir: nil)
        try FeatureExport.write(a, encoder: enc, to: dest, safetensors: format == "safetensors")
        log.succeeded("\(images.count) images", "-> \(dest)", alone: true)
      } catch {
        log.failure(images.count == 1 ? images[0] : "\(images.count) images", error)
      }
    }
    try log.finish()
  }
}
