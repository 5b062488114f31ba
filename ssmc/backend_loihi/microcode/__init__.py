"""ssmc's own Loihi-2-style neuron microcode (docs/microcode.md).

isa.py      registers, instructions, the binary encoding of a program
asm.py      assembler (text -> binary) and disassembler (binary -> text)
codegen.py  one program per neuron group, from its `neurons` op
emit.py     the programs as net.lava extras, and their size / cycle summary
The interpreter that runs them is ssmc/runtime/microcode_engine.py.
"""
