package scenario

import (
	"crypto/rand"
	"os"
	"strings"
	"testing"

	"github.com/kgswitch/kgswitch/esp"
	"github.com/kgswitch/kgswitch/tests/integration/lab"
)

func TestWriteKeyFile(t *testing.T) {
	for _, alg := range []esp.Algorithm{esp.AESCBCHMACSHA256, esp.AESGCM16, esp.NullHMACSHA256, esp.AESCBCHMACSHA1} {
		t.Run(alg.String(), func(t *testing.T) {
			path, lines, err := WriteKeyFile(t.TempDir(), lab.VM, alg)
			if err != nil {
				t.Fatalf("got WriteKeyFile error = %v, want nil", err)
			}
			fi, err := os.Stat(path)
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("got key file mode %v, %v; want 0600", fi.Mode(), err)
			}
			sas, err := esp.ParseKeys("lines", []byte(strings.Join(lines, "\n")))
			if err != nil || len(sas) != 2 {
				t.Fatalf("got ParseKeys = %v, %v; want two SAs", sas, err)
			}
			bu, ba := sas[0], sas[1]
			if bu.Src != lab.HoA || bu.Dst != lab.HAAddr || ba.Src != lab.HAAddr || ba.Dst != lab.HoA {
				t.Errorf("got SAs %v and %v, want src HoA dst HA, then src HA dst HoA", bu, ba)
			}
			if bu.Algorithm != alg || ba.Algorithm != alg || bu.SPI == ba.SPI || bu.SPI < 256 || ba.SPI < 256 {
				t.Errorf("got SAs %v and %v, want %v with distinct SPIs from 256", bu, ba, alg)
			}
		})
	}
	// Random keys: two files differ.
	a, _ := KeyLines(lab.VM, esp.AESGCM16, rand.Reader)
	b, _ := KeyLines(lab.VM, esp.AESGCM16, rand.Reader)
	if strings.Join(a, "") == strings.Join(b, "") {
		t.Errorf("got the same lines twice, want random keys")
	}
}
