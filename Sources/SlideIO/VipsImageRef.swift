import CVipsShims
import CVips
import Foundation

/// Owns one `VipsImage` reference and releases it on deinit. Not Sendable: an image
/// handle is used by the thread that made it (regions made from it stay on one thread each).
final class VipsImageRef {
    let pointer: UnsafeMutablePointer<VipsImage>

    /// Takes ownership of a reference returned by a libvips constructor.
    init(taking pointer: UnsafeMutablePointer<VipsImage>) {
        self.pointer = pointer
    }

    deinit { tessera_object_unref(pointer) }

    var width: Int { Int(vips_image_get_width(pointer)) }
    var height: Int { Int(vips_image_get_height(pointer)) }
    var bands: Int { Int(vips_image_get_bands(pointer)) }
    var isUChar: Bool { vips_image_get_format(pointer) == VIPS_FORMAT_UCHAR }
    /// Horizontal resolution in pixels per millimetre (`vips_image_get_xres`).
    var xres: Double { vips_image_get_xres(pointer) }
    /// Vertical resolution in pixels per millimetre.
    var yres: Double { vips_image_get_yres(pointer) }

    /// Whether a metadata field exists (`vips_image_get_typeof`).
    func hasField(_ name: String) -> Bool { vips_image_get_typeof(pointer, name) != 0 }

    /// A metadata field as text (`vips_image_get_as_string`), or nil when absent.
    func string(_ name: String) -> String? {
        guard hasField(name) else { return nil }
        var out: UnsafeMutablePointer<CChar>?
        guard vips_image_get_as_string(pointer, name, &out) == 0, let out else {
            vips_error_clear()
            return nil
        }
        defer { tessera_free(out) }
        return String(cString: out)
    }

    /// A metadata field parsed as a number, or nil.
    func double(_ name: String) -> Double? {
        string(name).flatMap { Double($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// A lazily resized view (`vips_resize`, linear kernel for speed at modest factors).
    func resized(horizontal: Double, vertical: Double) -> VipsImageRef? {
        guard let out = tessera_vips_resize(pointer, horizontal, vertical, Int32(VIPS_KERNEL_LINEAR.rawValue)) else {
            return nil
        }
        return VipsImageRef(taking: out)
    }

    /// Renders the whole image to packed RGB bytes (`vips_image_write_to_memory`). Only for small images.
    func renderRGB() -> [UInt8]? {
        guard let region = VipsRegionRef(image: self) else { return nil }
        var bytes = [UInt8](repeating: 0, count: width * height * 3)
        let ok = bytes.withUnsafeMutableBufferPointer { buffer in
            region.readRGB(x: 0, y: 0, width: width, height: height, into: buffer.baseAddress!)
        }
        return ok ? bytes : nil
    }

    /// Makes an image from packed 8-bit pixels (`vips_image_new_from_memory_copy`).
    static func fromPixels(_ pixels: [UInt8], width: Int, height: Int, bands: Int) -> VipsImageRef? {
        precondition(pixels.count == width * height * bands)
        let image = pixels.withUnsafeBytes { raw in
            vips_image_new_from_memory_copy(raw.baseAddress, raw.count, Int32(width), Int32(height),
                                            Int32(bands), VIPS_FORMAT_UCHAR)
        }
        return image.map(VipsImageRef.init(taking:))
    }

    /// Saves as PNG (`vips_pngsave`).
    func savePNG(to path: String) -> Bool {
        tessera_vips_pngsave(pointer, path) == 0
    }
}

/// Owns one `VipsRegion` (a window onto an image that pixels are prepared into).
/// Use from one thread at a time.
final class VipsRegionRef {
    let pointer: UnsafeMutablePointer<VipsRegion>
    /// Keeps the image alive while the region exists.
    let image: VipsImageRef

    init?(image: VipsImageRef) {
        guard let region = vips_region_new(image.pointer) else { return nil }
        self.pointer = region
        self.image = image
    }

    deinit { tessera_object_unref(pointer) }

    /// Copies the rectangle as packed RGB into `destination` (width*height*3 bytes).
    func readRGB(x: Int, y: Int, width: Int, height: Int, into destination: UnsafeMutablePointer<UInt8>) -> Bool {
        tessera_region_read_rgb8(pointer, Int32(x), Int32(y), Int32(width), Int32(height), destination) == 0
    }

    /// Copies the rectangle as normalised floats, planar (CHW) or interleaved (HWC).
    func readFloat(x: Int, y: Int, width: Int, height: Int, mean: [Float], std: [Float], planar: Bool,
                   into destination: UnsafeMutablePointer<Float>) -> Bool {
        mean.withUnsafeBufferPointer { m in
            std.withUnsafeBufferPointer { s in
                tessera_region_read_f32(pointer, Int32(x), Int32(y), Int32(width), Int32(height),
                                        m.baseAddress, s.baseAddress, planar ? 1 : 0, destination) == 0
            }
        }
    }
}

extension VipsImageRef {
    /// `vips_openslideload` of one level.
    static func openSlideLevel(path: String, level: Int) -> VipsImageRef? {
        tessera_vips_openslide_level(path, Int32(level)).map(VipsImageRef.init(taking:))
    }

    /// `vips_tiffload` of one page, random access.
    static func tiffPage(path: String, page: Int) -> VipsImageRef? {
        tessera_vips_tiff_page(path, Int32(page), Int32(VIPS_ACCESS_RANDOM.rawValue)).map(VipsImageRef.init(taking:))
    }

    /// `vips_image_new_from_file`, random access.
    static func file(path: String) -> VipsImageRef? {
        tessera_vips_open(path, Int32(VIPS_ACCESS_RANDOM.rawValue)).map(VipsImageRef.init(taking:))
    }
}
