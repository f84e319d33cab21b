package vswitch

import "math/rand/v2"

func randSeq() uint16 { return uint16(rand.Uint32()) }
