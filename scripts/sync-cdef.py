#!/usr/bin/env python3
"""Copy include/ingress_lb.h's cdef block into lua/ingress_lb/core.lua (the block
between the "begin cdef" and "end cdef" markers; tests/lua_cdef.rs checks they are
the same byte for byte)."""
import pathlib, sys

root = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "/* -- begin cdef", "/* -- end cdef -- */"

def block(text, name):
    try:
        start = text.index(BEGIN)
        end = text.index(END) + len(END)
    except ValueError:
        sys.exit(f"{name}: cdef markers not found")
    return start, end

header = (root / "include/ingress_lb.h").read_text()
lua_path = root / "lua/ingress_lb/core.lua"
lua = lua_path.read_text()
hs, he = block(header, "include/ingress_lb.h")
ls, le = block(lua, "lua/ingress_lb/core.lua")
new = lua[:ls] + header[hs:he] + lua[le:]
if new != lua:
    lua_path.write_text(new)
    print("lua/ingress_lb/core.lua: cdef block updated")
