import Foundation
import Testing
@testable import TesseraCore

@Test func sha256KnownVectors() throws {
    func hex(_ text: String) -> String {
        var hasher = SHA256()
        hasher.update(Data(text.utf8))
        return hasher.finalizeHex()
    }
    #expect(hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    #expect(hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    #expect(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    // Streaming in odd chunk sizes gives the same digest as one update.
    let bytes = Data((0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
    var whole = SHA256()
    whole.update(bytes)
    var pieces = SHA256()
    var offset = 0
    for size in [1, 63, 64, 65, 1000, 7] {
        pieces.update(bytes[offset..<(offset + size)])
        offset += size
    }
    pieces.update(bytes[offset...])
    #expect(whole.finalizeHex() == pieces.finalizeHex())
}
