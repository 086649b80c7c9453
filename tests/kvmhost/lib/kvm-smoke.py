#!/usr/bin/env python3
"""Smoke test for /dev/kvm: run a few real-mode instructions in a KVM guest.

Checks KVM_GET_API_VERSION == 12, then creates a VM with one vCPU and 4 KiB
of memory holding

    mov dx, 0x10 ; mov al, 42 ; out dx, al ; hlt

and runs it: expects a KVM_EXIT_IO on port 0x10 carrying 42, then
KVM_EXIT_HLT.  Prints one line per step; exit status 0 on success.
Inside tests/kvmhost this exercises nested SVM under QEMU/TCG for real.
"""
import fcntl
import mmap
import os
import struct
import sys

KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_RUN = 0xAE80
KVM_GET_REGS = 0x8090AE81
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5

CODE = bytes([0xBA, 0x10, 0x00, 0xB0, 0x2A, 0xEE, 0xF4])
GUEST_ADDR = 0x1000


def main():
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    api = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
    print("api version", api)
    if api != 12:
        return 1
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)

    mem = mmap.mmap(-1, 0x1000, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                    mmap.PROT_READ | mmap.PROT_WRITE)
    mem[0:len(CODE)] = CODE
    import ctypes
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    region = struct.pack("=IIQQQ", 0, 0, GUEST_ADDR, 0x1000, addr)
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)

    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu, size, mmap.MAP_SHARED,
                    mmap.PROT_READ | mmap.PROT_WRITE)

    sregs = bytearray(312)
    fcntl.ioctl(vcpu, KVM_GET_SREGS, sregs)
    struct.pack_into("=Q", sregs, 0, 0)   # cs.base
    struct.pack_into("=H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))

    regs = bytearray(144)
    fcntl.ioctl(vcpu, KVM_GET_REGS, regs)
    regs[:] = bytes(144)
    struct.pack_into("=Q", regs, 16 * 8, GUEST_ADDR)  # rip
    struct.pack_into("=Q", regs, 17 * 8, 0x2)         # rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, bytes(regs))

    seen_io = False
    for _ in range(10):
        fcntl.ioctl(vcpu, KVM_RUN, 0)
        reason = struct.unpack_from("=I", run, 8)[0]
        if reason == KVM_EXIT_IO:
            direction, size_, port, count, off = struct.unpack_from("=BBHIQ", run, 32)
            value = run[off]
            print("exit io: port 0x%x value %d" % (port, value))
            if direction != 1 or port != 0x10 or value != 42:
                return 1
            seen_io = True
        elif reason == KVM_EXIT_HLT:
            print("exit hlt")
            return 0 if seen_io else 1
        else:
            print("unexpected exit reason", reason)
            return 1
    print("no hlt")
    return 1


if __name__ == "__main__":
    sys.exit(main())
