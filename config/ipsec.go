package config

import (
	"fmt"
	"net/netip"

	"github.com/kgswitch/kgswitch/esp"
)

// SAsFor returns the ESP SAs protecting the signalling of home address hoa
// with Home Agent ha: bu for its Binding Updates (home address to Home
// Agent), ba for the Acks (the reverse, RFC 3776 §5.2); both nil when its
// signalling goes in clear.
func (c *Config) SAsFor(hoa, ha netip.Addr) (bu, ba *esp.SA) {
	for i := range c.SAs {
		sa := &c.SAs[i]
		switch {
		case sa.Src == hoa && sa.Dst == ha:
			bu = sa
		case sa.Src == ha && sa.Dst == hoa:
			ba = sa
		}
	}
	return bu, ba
}

// checkSAPairs refuses a key file that protects one direction of a VM's
// signalling and not the other: the Home Agent would drop what is not
// protected without a word.
func (c *Config) checkSAPairs() error {
	for _, vm := range c.VMs {
		bu, ba := c.SAsFor(vm.HomeAddress, vm.Home.HomeAgent)
		if (bu == nil) != (ba == nil) {
			missing := "Binding Updates (src home address, dst Home Agent)"
			if ba == nil {
				missing = "Binding Acks (src Home Agent, dst home address)"
			}
			return fmt.Errorf("ipsec_keys %s: home address %v has an SA for one direction only; add one for %s", c.IPsecKeys, vm.HomeAddress, missing)
		}
	}
	return nil
}
