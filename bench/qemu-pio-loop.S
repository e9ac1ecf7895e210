# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# The `pio-loop` guest of reference-vmm (reference-vmm/guests/pio-loop.S), packaged as a
# flat 64 KiB firmware image for QEMU (`-bios`), so the same guest code runs under QEMU/KVM
# in bench/compare.sh.
#
# QEMU's `pc` machine maps a 64 KiB `-bios` image just below 4 GiB and aliases it at
# 0xf0000..0xfffff. The vCPU starts in real mode at the reset vector (CS base 0xffff0000,
# IP 0xfff0, i.e. image offset 0xfff0). reference-vmm enters its guests directly in 64-bit
# long mode, CPL 0, paging on, interrupts off, rdi = N; this image reaches the same state
# itself (real mode -> long mode, identity-mapped first 2 MiB), then runs the loop of
# pio-loop.S byte for byte: N x `out PORT, al` (one exit each), then `hlt`.
# Instead of `hlt` ending the run (QEMU would just wait for an interrupt), the guest ends
# QEMU through isa-debug-exit (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`): writing
# EXIT_VALUE to port 0xf4 makes QEMU exit with status (EXIT_VALUE << 1) | 1 = 33, which the
# script checks to know the loop ran to the end.
#
# Build (bench/compare.sh does this; binutils only):
#   as --64 --defsym COUNT=N -o g.o qemu-pio-loop.S
#   ld -m elf_x86_64 -Ttext=0xf0000 -e 0xf0000 -o g.elf g.o
#   objcopy -O binary -j .text g.elf g.bin          # exactly 65536 bytes
# Optional: --defsym PORT=0x.. (default 0xe0 = PORT_TICK of reference-vmm/guests/common.inc).

    .ifndef COUNT
    .error "assemble with --defsym COUNT=N (number of out instructions)"
    .endif
    .ifndef PORT
    .equ PORT, 0xe0             # PORT_TICK in reference-vmm/guests/common.inc
    .endif

    .equ IMG_BASE, 0xf0000      # where the 64 KiB image is visible below 1 MiB
    .equ DEBUG_EXIT_PORT, 0xf4  # isa-debug-exit iobase
    .equ EXIT_VALUE, 0x10       # QEMU exit status (0x10 << 1) | 1 = 33

    # Page tables in guest RAM (the image itself is ROM): 4 KiB each, below 1 MiB.
    .equ PML4, 0x1000
    .equ PDPT, 0x2000
    .equ PD,   0x3000

    .text
    .code16
# Real mode, CS base 0xf0000: build page tables, load a GDT, enable long mode.
real_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    movl $(PDPT | 0x3), PML4        # present | writable
    movl $0, PML4 + 4
    movl $(PD | 0x3), PDPT
    movl $0, PDPT + 4
    movl $0x83, PD                  # present | writable | 2 MiB page at 0: identity map
    movl $0, PD + 4
    lgdtl %cs:(gdt_desc - IMG_BASE)
    mov %cr4, %eax
    or $0x20, %eax                  # CR4.PAE
    mov %eax, %cr4
    mov $PML4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           # IA32_EFER
    rdmsr
    or $0x100, %eax                 # EFER.LME
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax            # CR0.PG | CR0.PE: long mode active (compatibility)
    mov %eax, %cr0
    ljmpl $0x08, $start64           # 64-bit code segment

    .code64
start64:
    mov $COUNT, %rdi                # reference-vmm passes N in rdi

    # ---- from here on: reference-vmm/guests/pio-loop.S, instruction for instruction ----
    .intel_syntax noprefix
start:
    test rdi, rdi
    jz done
1:  out PORT, al
    dec rdi
    jnz 1b
done:
    # ---- end of the shared sequence; pio-loop.S has `hlt` here ----
    mov al, EXIT_VALUE
    out DEBUG_EXIT_PORT, al         # QEMU exits with status 33
    hlt
    jmp done
    .att_syntax prefix

    .p2align 3
gdt:
    .quad 0
    .quad 0x00af9b000000ffff        # 0x08: 64-bit code, DPL 0, accessed (the image is ROM)
    .quad 0x00cf93000000ffff        # 0x10: data, accessed
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt

# The reset vector: image offset 0xfff0 = linear 0xfffffff0.
    .org 0xfff0
    .code16
reset_vector:
    ljmp $(IMG_BASE >> 4), $(real_start - IMG_BASE)
    .org 0x10000                    # pad the image to exactly 64 KiB
