package vswitch

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kgswitch/kgswitch/ovsctl"
)

// A failed add-port leaves nothing behind: trying again reports the same
// failure (not "already bound"), and nothing is saved for the next run.
func TestFailedAddPortLeavesNothing(t *testing.T) {
	store := &memStore{}
	h := newHarnessWith(t, noVMConfig, store)
	ctx := context.Background()
	// No --mac and no attached-mac: a foreign host cannot serve it.
	h.db.add(ovsctl.Interface{Name: "vnet3", OFPort: 3})
	for try := range 2 {
		err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet3", HomeAddress: "2001:db8:2000::10"})
		if err == nil || !strings.Contains(err.Error(), "MAC") {
			t.Fatalf("try %d: got %v, want the missing MAC", try+1, err)
		}
		if st, _ := h.sw.Status(ctx); len(st) != 0 {
			t.Fatalf("try %d: got %+v, want nothing bound", try+1, st)
		}
	}
	if len(store.ports) != 0 {
		t.Errorf("got %+v saved, want nothing", store.ports)
	}
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet3", HomeAddress: "2001:db8:2000::10", MAC: "52:54:00:00:00:10"}); err != nil {
		t.Fatalf("with the MAC: %v", err)
	}
}

// Ports that are kgswitch's own or the host's are refused.
func TestAddPortRefusesHostPorts(t *testing.T) {
	h := newHarness(t, noVMConfig)
	ctx := context.Background()
	for _, port := range []string{"br0", "eth0", "kgs0"} {
		h.db.add(ovsctl.Interface{Name: port, OFPort: 9})
		err := h.sw.AddPort(ctx, AddPortRequest{Port: port, HomeAddress: "2001:db8:2000::10", MAC: "52:54:00:00:00:10"})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "never a VM") {
			t.Errorf("%s: got %v, want ErrInvalid: never a VM", port, err)
		}
	}
	err := h.sw.AddPort(ctx, AddPortRequest{Port: "br0", HomeAddress: "2001:db8:2000::1", MAC: "52:54:00:00:00:10"})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("got %v, want ErrInvalid", err)
	}
	if st, _ := h.sw.Status(ctx); len(st) != 0 {
		t.Errorf("got %+v, want nothing bound", st)
	}
}

// del-port unbinds what add-port bound, flows and saved binding included;
// what the configuration or external_ids bound is unbound there.
func TestDeletePort(t *testing.T) {
	store := &memStore{}
	h := newHarnessWith(t, testConfig, store)
	ctx := context.Background()
	h.db.add(ovsctl.Interface{Name: "vnet4", OFPort: 4, ExternalIDs: map[string]string{"attached-mac": "52:54:00:00:00:11"}})
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet4", HomeAddress: "2001:db8:2000::11"}); err != nil {
		t.Fatal(err)
	}
	if len(store.ports) != 1 || store.ports[0].Port != "vnet4" {
		t.Fatalf("got %+v saved, want vnet4's binding", store.ports)
	}
	if len(h.flows.text()) == 0 {
		t.Fatal("no flows for the bound port")
	}
	if err := h.sw.DeletePort(ctx, "vnet4"); err != nil {
		t.Fatal(err)
	}
	if bound(h, "vnet4") {
		t.Errorf("vnet4 still in status after del-port")
	}
	for _, f := range h.flows.text() {
		if strings.Contains(f, "in_port=4") {
			t.Errorf("flow left for vnet4: %s", f)
		}
	}
	if len(store.ports) != 0 {
		t.Errorf("got %+v saved, want nothing", store.ports)
	}
	if err := h.sw.DeletePort(ctx, "vnet3"); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "configuration file") {
		t.Errorf("configured port: got %v, want ErrInvalid naming the configuration file", err)
	}
	if err := h.sw.DeletePort(ctx, "vnet9"); !errors.Is(err, ErrUnknownPort) {
		t.Errorf("unknown port: got %v, want ErrUnknownPort", err)
	}
	// vnet4 is on the bridge, bound no more: the refusal must not claim
	// otherwise.
	if err := h.sw.DeletePort(ctx, "vnet4"); !errors.Is(err, ErrUnknownPort) || err.Error() != "vnet4 is not bound to a home address here" {
		t.Errorf("port on the bridge, not bound: got %v, want ErrUnknownPort saying it is not bound", err)
	}
	// Bound again afterwards, from scratch.
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet4", HomeAddress: "2001:db8:2000::11"}); err != nil {
		t.Fatalf("bind again: %v", err)
	}
}

// add-port bindings survive a restart, even for a port not on the bridge
// when kgswitch starts; the configuration wins a conflict.
func TestAddPortBindingsRestored(t *testing.T) {
	store := &memStore{}
	h := newHarnessWith(t, noVMConfig, store)
	ctx := context.Background()
	h.db.add(ovsctl.Interface{Name: "vnet4", OFPort: 4, ExternalIDs: map[string]string{"attached-mac": "52:54:00:00:00:11"}})
	if err := h.sw.AddPort(ctx, AddPortRequest{Port: "vnet4", HomeAddress: "2001:db8:2000::11", Activate: true}); err != nil {
		t.Fatal(err)
	}
	if store.ports[0].Activate {
		t.Error("--activate saved: it is a moment's fact, not part of the binding")
	}
	h.cancel()
	<-h.done
	h.done <- nil // for the first harness's cleanup

	again := newHarnessWith(t, noVMConfig, store)
	if st := again.status(t, "vnet4"); st.HomeAddress != "2001:db8:2000::11" {
		t.Fatalf("got %+v, want vnet4 bound to 2001:db8:2000::11 after the restart", st)
	}
	again.db.add(ovsctl.Interface{Name: "vnet4", OFPort: 4, ExternalIDs: map[string]string{"attached-mac": "52:54:00:00:00:11"}})
	again.settle(t)
	if st := again.status(t, "vnet4"); st.BindingState != "waiting-for-guest" {
		t.Errorf("got %+v, want the restored port served (waiting for its guest)", st)
	}

	// A configuration that now binds the home address itself wins.
	conflict := newHarnessWith(t, noVMConfig+"[[vm]]\nport = \"vnet7\"\nhome_address = \"2001:db8:2000::11\"\nmac = \"52:54:00:00:00:17\"\n", store)
	if bound(conflict, "vnet4") || !bound(conflict, "vnet7") {
		t.Error("the saved binding did not yield to the configuration")
	}
}

// bound reports whether port is bound to a VM.
func bound(h *harness, port string) bool {
	st, _ := h.sw.Status(context.Background())
	for _, p := range st {
		if p.Port == port {
			return true
		}
	}
	return false
}
