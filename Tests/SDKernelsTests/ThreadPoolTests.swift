#if canImport(Glibc)
import Glibc
#endif
import XCTest
@testable import SDKernels

final class ThreadPoolTests: XCTestCase {
    func testRangesCoverEveryIndexOnce() {
        for pool in testPools {
            for count in [0, 1, 2, 3, 5, 100] {
                let hits = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
                hits.initialize(repeating: 0, count: max(count, 1))
                defer { hits.deallocate() }
                // Ranges are disjoint, so unsynchronised increments are safe.
                pool.parallelRanges(count) { range in for i in range { hits[i] += 1 } }
                for i in 0..<count { XCTAssertEqual(hits[i], 1, "threads=\(pool.threads) count=\(count) index \(i)") }
            }
        }
    }

    func testPartsRunOnDistinctThreadsAndRegionsRepeat() {
        let pool = testPools[2]
        let ids = UnsafeMutablePointer<pthread_t>.allocate(capacity: pool.threads)
        defer { ids.deallocate() }
        for _ in 0..<200 {
            pool.run(parts: pool.threads) { part in ids[part] = pthread_self() }
            XCTAssertEqual(Set((0..<pool.threads).map { ids[$0] }).count, pool.threads, "parts on distinct threads")
        }
    }

    func testScratchIsPerPartAndGrows() {
        let pool = testPools[1]
        let first = UnsafeMutablePointer<UnsafeMutablePointer<Float>?>.allocate(capacity: 2)
        defer { first.deallocate() }
        pool.run(parts: 2) { part in first[part] = pool.scratch(part: part, count: 10) }
        XCTAssertNotEqual(first[0], first[1])
        pool.run(parts: 2) { part in
            let p = pool.scratch(part: part, count: 100_000)
            p[99_999] = Float(part) // must be writable
        }
    }

    func testPoolReleasesItsThreads() {
        weak var weakPool: ThreadPool?
        do {
            let pool = ThreadPool(threads: 3)
            weakPool = pool
            pool.parallelFor(10) { _ in }
        }
        XCTAssertNil(weakPool)
    }
}
