package ovsctl

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/ovn-kubernetes/libovsdb/model"
	"github.com/ovn-kubernetes/libovsdb/ovsdb"
)

// TestModelMatchesSchema checks the hand-written model structs against the
// installed vswitch.ovsschema: a misspelt column or wrong Go type would
// otherwise only show up when connecting.
func TestModelMatchesSchema(t *testing.T) {
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		if os.Getenv("KGSWITCH_SKIP_INTEGRATION") == "1" {
			t.Skipf("KGSWITCH_SKIP_INTEGRATION=1 and no OVS schema: %v", err)
		}
		t.Fatalf("read OVS schema (install openvswitch-switch or set KGSWITCH_SKIP_INTEGRATION=1): %v", err)
	}
	var schema ovsdb.DatabaseSchema
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("parse %s: %v", schemaPath, err)
	}
	cm, err := clientDBModel()
	if err != nil {
		t.Fatalf("clientDBModel() = %v", err)
	}
	if _, errs := model.NewDatabaseModel(schema, cm); len(errs) > 0 {
		t.Errorf("got model validation errors %v, want none", errs)
	}
}
