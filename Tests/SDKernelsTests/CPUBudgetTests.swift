import Foundation
import XCTest
@testable import SDKernels

/// The default thread count: online CPUs, an affinity mask and a cgroup CPU quota.
final class CPUBudgetTests: XCTestCase {
    func testThreadsAreTheTightestLimit() {
        XCTAssertEqual(CPUBudget.threads(online: 8, affinity: nil, quota: nil), 8)
        XCTAssertEqual(CPUBudget.threads(online: 8, affinity: 2, quota: nil), 2)
        XCTAssertEqual(CPUBudget.threads(online: 8, affinity: nil, quota: 1.5), 2, "a quota rounds up")
        XCTAssertEqual(CPUBudget.threads(online: 8, affinity: 4, quota: 0.5), 1)
        XCTAssertEqual(CPUBudget.threads(online: 2, affinity: 8, quota: 16), 2)
        XCTAssertEqual(CPUBudget.threads(online: 0, affinity: nil, quota: nil), 1)
    }

    func testQuotaFiles() {
        XCTAssertNil(CPUBudget.quota(cpuMax: "max 100000\n"))
        XCTAssertEqual(CPUBudget.quota(cpuMax: "200000 100000\n"), 2)
        XCTAssertEqual(CPUBudget.quota(cpuMax: "150000 100000"), 1.5)
        for bad in ["", "garbage", "0 100000", "100000 0", "1 2 3", "-5 100000"] {
            XCTAssertNil(CPUBudget.quota(cpuMax: bad), bad)
        }
        XCTAssertNil(CPUBudget.quota(cfsQuota: "-1\n", period: "100000\n"))
        XCTAssertEqual(CPUBudget.quota(cfsQuota: "50000\n", period: "100000\n"), 0.5)
        XCTAssertEqual(CPUBudget.ancestors("/a/b"), ["/a/b", "/a", ""])
        XCTAssertEqual(CPUBudget.ancestors("/"), [""])
    }

    /// Fake hierarchies: the quota of the process's cgroup or of any ancestor, the tightest.
    func testCgroupHierarchies() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cpu-budget-\(getpid())")
        defer { try? FileManager.default.removeItem(at: root) }
        func write(_ path: String, _ text: String) throws {
            let url = root.appendingPathComponent(path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        // cgroup v2: a parent's 3 CPUs, the process's own 2.5, the root none.
        try write("v2/cpu.max", "max 100000\n")
        try write("v2/system.slice/cpu.max", "300000 100000\n")
        try write("v2/system.slice/app.service/cpu.max", "250000 100000\n")
        XCTAssertEqual(CPUBudget.cgroupQuota(root: root.path + "/v2", cgroupList: "0::/system.slice/app.service\n"), 2.5)
        try write("v2/system.slice/cpu.max", "100000 100000\n")
        XCTAssertEqual(CPUBudget.cgroupQuota(root: root.path + "/v2", cgroupList: "0::/system.slice/app.service\n"), 1)
        XCTAssertNil(CPUBudget.cgroupQuota(root: root.path + "/v2", cgroupList: "0::/\n"))
        // cgroup v1 as a container sees it: its path is not below the mount, whose own files hold the limit.
        try write("v1/cpu,cpuacct/cpu.cfs_quota_us", "200000\n")
        try write("v1/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
        let list = "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
        XCTAssertEqual(CPUBudget.cgroupQuota(root: root.path + "/v1", cgroupList: list), 2)
        try write("v1/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
        XCTAssertNil(CPUBudget.cgroupQuota(root: root.path + "/v1", cgroupList: list))
        XCTAssertNil(CPUBudget.cgroupQuota(root: root.path + "/none", cgroupList: list))
        XCTAssertNil(CPUBudget.cgroupQuota(cgroupList: nil))
    }

    /// The real process: within the online count and the affinity mask.
    func testThisProcess() {
        let online = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let threads = CPUBudget.threads
        XCTAssertGreaterThanOrEqual(threads, 1)
        XCTAssertLessThanOrEqual(threads, online)
        XCTAssertEqual(ThreadPool.defaultThreadCount, threads)
    }
}
