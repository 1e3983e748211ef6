import Foundation

/// Counts requests that hold a large body (img2img's base64 images, up to
/// `maxImageBodyBytes`) from the first byte read until their answer: with at most `limit`
/// of them, the memory such requests hold stays bounded however many clients connect.
/// The queue bounds the jobs; this bounds the uploads that would become jobs.
final class UploadGate: @unchecked Sendable {
    let limit: Int
    private let lock = NSLock()
    private var active = 0

    init(limit: Int) { self.limit = max(1, limit) }

    /// Takes a place, or returns false when all `limit` are taken.
    func enter() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard active < limit else { return false }
        active += 1
        return true
    }

    func leave() {
        lock.lock()
        active -= 1
        lock.unlock()
    }
}
