import Foundation
import TensorCore

/// DAPT's cached prototypes: `<dataset folder>/split_fewshot/shot_K-seed_S_prototype.pkl`, written by
/// `prototype_generator` in mlvlab/DAPT `trainers/dapt.py` as `pickle.dump(prototype, f)` of a
/// K x D tensor in CLIP's dtype (fp16 on GPU). A plain pickle of a tensor holds
/// `torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(b), offset, size, stride, ...)`,
/// `b` being the storage in torch's legacy `torch.save` format: five small pickles (magic number,
/// protocol, system info, the storage's persistent id naming its type, the storage keys), then
/// the storage as an int64 element count followed by the raw little-endian elements.
public enum DAPTPrototypeFile {
    /// The file DAPT writes beside CoOp's few-shot draw `shot_K-seed_S.pkl`.
    public static func path(fewShotCache: String) -> String {
        fewShotCache.hasSuffix(".pkl") ? String(fewShotCache.dropLast(4)) + "_prototype.pkl" : fewShotCache + "_prototype.pkl"
    }

    /// Reads the K x `dimension` prototypes (converted to Float32).
    public static func read(path: String, dimension: Int) throws -> Tensor {
        guard let data = FileManager.default.contents(atPath: path) else { throw PromptError(.damagedCheckpoint, "\(path): cannot read DAPT's prototype file") }
        let bytes = [UInt8](data)
        func fail(_ why: String) -> PromptError { PromptError(.damagedCheckpoint, "\(path): not a DAPT prototype pickle (\(why)); delete it to compute the prototypes anew") }
        guard let name = bytes.firstRange(of: Array("_load_from_bytes".utf8)) else { throw fail("no tensor storage found") }
        // The storage bytes follow as BINBYTES (B, 4-byte length), SHORT_BINBYTES (C, 1 byte) or BINBYTES8.
        var i = name.upperBound
        var payload: ArraySlice<UInt8>?
        while i < min(bytes.count, name.upperBound + 16) {
            func length(_ n: Int) -> Int { (0..<n).reduce(0) { $0 | Int(bytes[i + 1 + $1]) << (8 * $1) } }
            switch bytes[i] {
            case 0x42 where i + 5 <= bytes.count: let n = length(4); payload = bytes[(i + 5)..<min(bytes.count, i + 5 + n)]
            case 0x43 where i + 2 <= bytes.count: let n = length(1); payload = bytes[(i + 2)..<min(bytes.count, i + 2 + n)]
            case 0x8e where i + 9 <= bytes.count: let n = length(8); payload = bytes[(i + 9)..<min(bytes.count, i + 9 + n)]
            default: break
            }
            if payload != nil { break }
            i += 1
        }
        guard let p = payload.map(Array.init) else { throw fail("no storage bytes after _load_from_bytes") }
        let kinds: [(String, Int)] = [("BFloat16Storage", 2), ("HalfStorage", 2), ("FloatStorage", 4), ("DoubleStorage", 8)]
        guard let (kind, size) = kinds.first(where: { p.firstRange(of: Array($0.0.utf8)) != nil }) else {
            throw fail("storage of an unsupported type (expected half, bfloat16, float or double)")
        }
        // Find the element count n such that the payload ends with int64 n then n elements.
        var found: Int?
        for n in stride(from: (p.count - 8) / size, through: 1, by: -1) {
            let at = p.count - n * size - 8
            guard at >= 0 else { continue }
            let count = (0..<8).reduce(UInt64(0)) { $0 | UInt64(p[at + $1]) << (8 * UInt64($1)) }
            if count == UInt64(n) { found = n; break }
        }
        guard let n = found, n % dimension == 0 else { throw fail("its storage does not hold K x \(dimension) values") }
        let start = p.count - n * size
        var values = [Float](repeating: 0, count: n)
        for j in 0..<n {
            let o = start + j * size
            switch kind {
            case "HalfStorage": values[j] = Float(Float16(bitPattern: UInt16(p[o]) | UInt16(p[o + 1]) << 8))
            case "BFloat16Storage": values[j] = Float(bitPattern: (UInt32(p[o]) | UInt32(p[o + 1]) << 8) << 16)
            case "FloatStorage": values[j] = Float(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(p[o + $1]) << (8 * UInt32($1)) })
            default: values[j] = Float(Double(bitPattern: (0..<8).reduce(UInt64(0)) { $0 | UInt64(p[o + $1]) << (8 * UInt64($1)) }))
            }
        }
        return Tensor(shape: [n / dimension, dimension], data: values)
    }
}
