package ovsctl

import (
	"github.com/ovn-kubernetes/libovsdb/model"
)

// Table names in the Open_vSwitch database schema (vswitch.ovsschema).
const (
	dbName             = "Open_vSwitch"
	tableOpenVSwitch   = "Open_vSwitch"
	tableBridge        = "Bridge"
	tablePort          = "Port"
	tableInterface     = "Interface"
	interfaceInternal  = "internal"
	columnExternalIDs  = "external_ids"
	columnBridgePorts  = "ports"
	namedUUIDInterface = "kgiface"
	namedUUIDPort      = "kgport"
)

// ovsOpenVSwitch is the part of the root Open_vSwitch row kgswitch reads.
type ovsOpenVSwitch struct {
	UUID    string   `ovsdb:"_uuid"`
	Bridges []string `ovsdb:"bridges"`
}

// ovsBridge is the part of a Bridge row kgswitch reads: its name and the
// Port rows it owns.
type ovsBridge struct {
	UUID  string   `ovsdb:"_uuid"`
	Name  string   `ovsdb:"name"`
	Ports []string `ovsdb:"ports"`
}

// ovsPort is the part of a Port row kgswitch reads and writes.
type ovsPort struct {
	UUID       string   `ovsdb:"_uuid"`
	Name       string   `ovsdb:"name"`
	Interfaces []string `ovsdb:"interfaces"`
}

// ovsInterface is the part of an Interface row kgswitch reads and writes.
// OFPort, MACInUse, IfIndex and LinkState are optional columns ("min": 0,
// "max": 1), hence pointers; ovs-vswitchd fills them in after the row is
// created.
type ovsInterface struct {
	UUID        string            `ovsdb:"_uuid"`
	Name        string            `ovsdb:"name"`
	Type        string            `ovsdb:"type"`
	OFPort      *int              `ovsdb:"ofport"`
	MACInUse    *string           `ovsdb:"mac_in_use"`
	ExternalIDs map[string]string `ovsdb:"external_ids"`
	IfIndex     *int              `ovsdb:"ifindex"`
	LinkState   *string           `ovsdb:"link_state"`
	Options     map[string]string `ovsdb:"options"`
}

// clientDBModel returns the libovsdb client model for the four tables.
func clientDBModel() (model.ClientDBModel, error) {
	return model.NewClientDBModel(dbName, map[string]model.Model{
		tableOpenVSwitch: &ovsOpenVSwitch{},
		tableBridge:      &ovsBridge{},
		tablePort:        &ovsPort{},
		tableInterface:   &ovsInterface{},
	})
}
