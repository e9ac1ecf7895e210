# self-triple-fault: the guest breaks itself, with no help from the VMM.
# It loads an empty IDT (limit 0) and executes `ud2`:
#   #UD  -> the IDT has no gate 6      -> #GP (error code: IDT, vector 6)
#   #GP  -> the IDT has no gate 13     -> #DF (a contributory fault during #GP)
#   #DF  -> the IDT has no gate 8      -> triple fault: the CPU shuts down
# KVM reports the shutdown as KVM_EXIT_SHUTDOWN; the VMM must report it as
# outcome `shutdown` with a reason sentence, not crash or fail.
# Out: report 0 = 0x5e1f before the fault (the guest ran up to the fault);
#      report 1 = 0xdead only if execution ever continued past `ud2`.
.include "common.inc"

.text
start:
    REPORT 0, 0x5e1f
    lidt [rip + empty_idtr]
    ud2                     # no handler anywhere: #UD -> #GP -> #DF -> shutdown
    REPORT 1, 0xdead        # never reached
1:  hlt
    jmp 1b

.balign 8
empty_idtr:
    .word 0                 # limit 0: not even one gate fits
    .quad 0
